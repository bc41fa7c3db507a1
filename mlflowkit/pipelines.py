"""The public pipelines and plans: ``@mk.pipeline``, ``Pipeline.plan``, ``Plan.run``.

Layer 6: a ``Plan`` is the traced graph of :mod:`mlflowkit.plan` plus what needs the layers
above the scheduler (running it through :mod:`mlflowkit.driver`, explaining it, showing it
with :mod:`mlflowkit.display`), so the engine below never imports upwards.

Invariants
----------
* ``Pipeline.plan`` runs the body exactly once (:func:`mlflowkit.tracing.trace`) and checks
  its parameters against the signature and the annotations before that.
* A pipeline's return annotation is checked while planning where the output's static type
  decides it, else on the output value when a run ends (``Plan.check_returns``).
* Called inside another pipeline's body, a pipeline joins that trace (its step names prefixed
  with its name); called outside, it plans and runs with the defaults.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from mlflowkit.driver import explain_plan, run_plan
from mlflowkit.errors import HashingError, PlanningError, WiringError
from mlflowkit.explain import Explanation
from mlflowkit.plan import Ref, TracedPlan, find_refs, user_location
from mlflowkit.step import TRACER
from mlflowkit.tracing import Tracer, refuse_nested_plan, trace
from mlflowkit.wiring import check_value, compatible, describe, did_you_mean, is_unknown, short_repr

if TYPE_CHECKING:
    from mlflowkit.display import PlanView
    from mlflowkit.run import Run

__all__ = ["ExplanationTable", "Pipeline", "Plan", "pipeline"]

P = ParamSpec("P")
R = TypeVar("R")


class ExplanationTable(Explanation):
    """``Plan.explain``'s result: an :class:`~mlflowkit.explain.Explanation` that also renders
    as an HTML table in a notebook (the display code loads only then)."""

    def __init__(self, explanation: list[dict[str, Any]]) -> None:
        super().__init__(explanation)
        if isinstance(explanation, Explanation):
            self.internal = explanation.internal

    def _repr_html_(self) -> str:
        from mlflowkit.display import explanation_html

        return explanation_html(self)


class Plan(TracedPlan):
    """A traced pipeline that can run, explain and show itself (``mk.Plan``).

    The graph, its step calls and renderings as text are :class:`mlflowkit.plan.TracedPlan`;
    this class adds what needs the layers above the scheduler: the driver and the displays.
    """

    def run(
        self,
        executor: Any = "local",
        store: Any = None,
        *,
        max_workers: int | None = None,
        progress: bool | None = None,
        force: bool | list[str] = False,
    ) -> Run:
        """Execute the plan; see ``mlflowkit.driver.run_plan``."""
        return run_plan(
            self,
            executor=executor,
            store=store,
            max_workers=max_workers,
            progress=progress,
            force=force,
        )

    def explain(self, store: Any = None) -> list[dict[str, Any]]:
        """For each step call: would a run now hit the cache or execute, and why.

        The list prints as a table, and renders as one in a notebook.
        """
        return ExplanationTable(explain_plan(self, store))

    def show(self, store: Any = None) -> PlanView:
        """A picture of the DAG for notebooks.

        Without ``store`` the step calls are drawn unmarked. With a store (a ``Store`` or a
        URL), each call is coloured by ``explain(store)``: *cached* or *will execute*, with
        the reason as its tooltip. In a notebook the returned object renders as the picture;
        ``.svg()`` gives the SVG text.
        """
        from mlflowkit.display import PlanView  # rich and the SVG code load when first shown

        return PlanView(self, None if store is None else self.explain(store))

    def _repr_html_(self) -> str:
        from mlflowkit.display import plan_html

        return plan_html(self)


class Pipeline(Generic[P, R]):
    """A function whose body wires steps together; ``.plan(**params)`` traces it."""

    def __init__(self, fn: Callable[P, R], name: str | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.__signature__ = inspect.signature(fn)

    def _hints(self) -> dict[str, Any]:
        """The function's resolved annotations (``Annotated`` kept); unresolvable ones are Any."""
        cached: dict[str, Any] | None = self.__dict__.get("_hints_cache")
        if cached is None:
            try:
                cached = typing.get_type_hints(self.fn, include_extras=True)
            except Exception:  # an unresolvable forward reference: fall back per annotation
                cached = {
                    k: Any if isinstance(v, str) else v
                    for k, v in getattr(self.fn, "__annotations__", {}).items()
                }
            self.__dict__["_hints_cache"] = cached
        return cached

    def _returns(self) -> Any:
        """The return annotation (``-> mk.Ref[T]`` read as ``T``); Any when there is none."""
        expected = self._hints().get("return", Any)
        if expected is Ref or typing.get_origin(expected) is Ref:
            expected = (typing.get_args(expected) or (Any,))[0]
        return expected

    def _check_return(self, output: Any) -> bool:
        """Check what the body returned against the return annotation (``WiringError``).

        Returns True when planning cannot decide it (a Ref whose type is unknown, or a
        structure holding Refs): then a run checks the output value.
        """
        expected = self._returns()
        if is_unknown(expected):
            return False
        if isinstance(output, Ref):
            if compatible(output.type, expected):
                return is_unknown(output.type)
            found = f"{describe(output.type)} (the output of step {output.node!r})"
        elif find_refs(output):
            return True
        elif check_value(output, expected):
            return False
        else:
            found = f"{describe(type(output))} ({short_repr(output)})"
        code = getattr(self.fn, "__code__", None)
        loc = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "<unknown>"
        raise WiringError(
            f"Pipeline {self.name!r} (at {loc}) returns {found}, but its return annotation "
            f"says {describe(expected)}. Fix what the pipeline returns, or its annotation.",
            step=self.name,
            parameter="return",
            expected=expected,
            actual=output.type if isinstance(output, Ref) else type(output),
            location=loc,
        )

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        sig: inspect.Signature = self.__signature__
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            loc = user_location()
            hint = did_you_mean(kwargs, sig)
            raise WiringError(
                f"Pipeline {self.name!r} called with parameters that do not fit its signature "
                f"{self.name}{sig} at {loc}: {exc}.{hint} Fix the parameter names.",
                step=self.name,
                location=loc,
            ) from None
        bound.apply_defaults()
        hints = self._hints()
        for pname, value in bound.arguments.items():
            try:
                refs = find_refs(value)
            except HashingError as exc:  # a parameter that holds itself
                raise HashingError(
                    f"Pipeline {self.name!r}, parameter {pname!r}: {exc}", type_name=exc.type_name
                ) from None
            if pname in hints and not refs and not check_value(value, hints[pname]):
                loc = user_location()
                raise WiringError(
                    f"Pipeline {self.name!r}, parameter {pname!r} (at {loc}): expected "
                    f"{describe(hints[pname])}, found {describe(type(value))} "
                    f"({short_repr(value)}). Pass a value of the annotated type.",
                    location=loc,
                    step=self.name,
                    parameter=pname,
                    expected=hints[pname],
                    actual=type(value),
                )
        return dict(bound.arguments)

    def plan(self, *args: P.args, **kwargs: P.kwargs) -> Plan:
        """Run the body once with these parameter values and return the traced ``Plan``."""
        refuse_nested_plan(self.name)  # before the parameters are checked
        params = self._bind(args, kwargs)
        traced = trace(self.name, self.fn, params)
        check_returns = self._check_return(traced.output)
        return Plan(
            self.name,
            params,
            traced.nodes,
            traced.output,
            returns=self._returns(),
            check_returns=check_returns,
            publishes=traced.publishes,
            consumes=traced.consumes,
            source=self._source(),
        )

    def _source(self) -> dict[str, str]:
        """Where the pipeline function lives: its module, qualified name and file."""
        code = getattr(self.fn, "__code__", None)
        return {
            "module": str(getattr(self.fn, "__module__", "") or ""),
            "qualname": str(getattr(self.fn, "__qualname__", "") or ""),
            "file": code.co_filename if code is not None else "",
        }

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = TRACER.get()
        if tracer is not None:
            if not isinstance(tracer, Tracer):
                raise PlanningError(f"Pipeline {self.name!r} called inside an unknown tracer")
            params = self._bind(args, kwargs)
            tracer.enter(self.name)
            try:
                result: R = self.fn(**params)  # type: ignore[call-arg]
            finally:
                tracer.leave()
            self._check_return(result)  # what planning cannot decide is left to the steps
            return result
        return self.plan(*args, **kwargs).run().output  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<mk.Pipeline {self.name}>"


@overload
def pipeline(fn: Callable[P, R], /) -> Pipeline[P, R]: ...


@overload
def pipeline(*, name: str | None = None) -> Callable[[Callable[P, R]], Pipeline[P, R]]: ...


def pipeline(
    fn: Callable[P, R] | None = None, /, *, name: str | None = None
) -> Pipeline[P, R] | Callable[[Callable[P, R]], Pipeline[P, R]]:
    """Declare a function whose body wires steps together into a pipeline."""
    if fn is not None:
        return Pipeline(fn, name)

    def decorate(f: Callable[P, R]) -> Pipeline[P, R]:
        return Pipeline(f, name)

    return decorate
