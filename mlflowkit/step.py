"""``@step``: a plain function plus its identity and execution hints.

Invariants
----------
* A ``Step`` is frozen once built; it keeps the function's signature, docstring and
  ``__wrapped__``, and outside a pipeline calling it is calling the function.
* Options split in two: *identity* (``name``, ``version``, ``cache``, ``serializer``), which
  decides what a result means, and *hints* (``retries``, ``retry_delay``, ``timeout``,
  ``resources``), which only decide how it runs. Hints never enter a cache key.
* Decorating declares; it does not register anything globally. While a pipeline is being
  planned, a tracer installed in ``TRACER`` receives the call instead (see ``tracing.py``).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import sys
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, TypeVar, overload

from mlflowkit.errors import PlanningError, WiringError

__all__ = ["ExecutionHints", "Step", "StepIdentity", "step"]


P = ParamSpec("P")
R = TypeVar("R")


class Tracer(typing.Protocol):
    """What a planning context must offer to receive step calls (implemented in tracing.py)."""

    def call(self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def map(self, step: Step[Any, Any], kwargs: dict[str, Any]) -> Any: ...


#: The active planning tracer, or None outside a pipeline body.
TRACER: ContextVar[Tracer | None] = ContextVar("mlflowkit_tracer", default=None)

#: The step called as a plain function (outside a pipeline) whose body is running, if any: a
#: metric it logs is checked and then dropped (nothing is recorded for a plain call), so user
#: code that logs metrics stays trivial to unit-test.
PLAIN_CALL: ContextVar[Step[Any, Any] | None] = ContextVar("mlflowkit_plain", default=None)


@dataclass(frozen=True)
class StepIdentity:
    """The options that are part of what a step's result *means* (hashed into keys)."""

    name: str
    version: str | None = None
    cache: bool = True
    serializer: str | None = None


@dataclass(frozen=True)
class ExecutionHints:
    """How a step should run. Never part of a cache key.

    ``retry_delay`` doubles after each failed attempt; ``timeout`` is in seconds;
    ``resources`` such as ``{"gpu": 1}`` steer placement.
    """

    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    resources: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: number of GPUs asked for (0 when none); read for every call, so computed once
    gpus: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", float(self.resources.get("gpu", 0)))

    def __reduce__(self) -> Any:
        # resources travel as a dict: the standard pickler (which the ``processes`` executor
        # tries before cloudpickle) cannot pickle a MappingProxyType
        fields = (self.retries, self.retry_delay, self.timeout, dict(self.resources))
        return (_rebuild_hints, fields)


def _rebuild_hints(
    retries: int, retry_delay: float, timeout: float | None, resources: dict[str, float]
) -> ExecutionHints:
    return ExecutionHints(retries, retry_delay, timeout, MappingProxyType(resources))


def _validate(
    fn: Any,
    version: Any,
    cache: Any,
    retries: Any,
    retry_delay: Any,
    timeout: Any,
    resources: Any,
    serializer: Any,
    name: Any,
) -> None:
    where = getattr(fn, "__qualname__", repr(fn))

    def bad(option: str, expected: str, found: Any) -> WiringError:
        return WiringError(
            f"@mk.step option {option}= on {where}: expected {expected}, found {found!r}. "
            f"Fix the decorator arguments.",
            step=where,
            parameter=option,
            expected=expected,
            actual=found,
        )

    if not callable(fn):
        raise bad("fn", "a function", fn)
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        raise bad("fn", "a plain function (not async, not a generator)", fn)
    if version is not None and (not isinstance(version, str) or not version):
        raise bad("version", "a non-empty string or None", version)
    if not isinstance(cache, bool):
        raise bad("cache", "True or False", cache)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise bad("retries", "an int >= 0", retries)
    if (
        isinstance(retry_delay, bool)
        or not isinstance(retry_delay, (int, float))
        or not math.isfinite(retry_delay)
        or retry_delay < 0
    ):
        raise bad("retry_delay", "seconds as a number >= 0", retry_delay)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise bad("timeout", "seconds as a number > 0, or None", timeout)
    if resources is not None and (
        not isinstance(resources, Mapping)
        or not all(
            isinstance(k, str)
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and v >= 0
            for k, v in resources.items()
        )
    ):
        raise bad("resources", 'a mapping of names to amounts, e.g. {"gpu": 1}', resources)
    if serializer is not None and not isinstance(serializer, str):
        raise bad("serializer", "a serializer name (str) or None", serializer)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise bad("name", "a non-empty string or None", name)
    if name is not None and any(c in name for c in "[].#"):
        raise bad("name", "a name without '[', ']', '.' or '#'", name)


class _Wiring:
    """What tracing a call of a step reads (``Step._wiring``), worked out once per step.

    Attributes
    ----------
    params:
        ``(name, default, annotation or None)`` of each parameter when all are plain
        positional-or-keyword ones (every argument can be passed by name); None otherwise.
    names:
        The parameters' names, in order (when ``params`` is not None; else empty).
    returns:
        The return annotation (``Any`` when there is none).
    name:
        The display name of the step's calls (``Step.name``).
    """

    __slots__ = ("name", "names", "params", "returns")

    def __init__(
        self, name: str, simple: tuple[tuple[str, Any], ...] | None, hints: dict[str, Any]
    ) -> None:
        self.name = name
        self.params = None if simple is None else tuple((n, d, hints.get(n)) for n, d in simple)
        self.names = tuple(n for n, _ in simple or ())
        self.returns = hints.get("return", Any)


class Step(Generic[P, R]):
    """A function declared as a pipeline step.

    Calling it outside a pipeline calls the function. While a pipeline is planned, calling it
    records a step call and returns a ``Ref`` to its future output.

    Attributes
    ----------
    fn:
        The plain function.
    identity:
        Options that are part of the result's meaning (name, version, cache, serializer).
    hints:
        Execution hints (retries, retry_delay, timeout, resources); never hashed.
    """

    __mlflowkit_step__ = True
    fn: Callable[P, R]
    identity: StepIdentity
    hints: ExecutionHints
    _qualified_name: str
    #: ``(name, default)`` of each parameter when all are plain positional-or-keyword ones
    #: (every argument can be passed by name); None otherwise. Computed when the step is made.
    _simple_params: tuple[tuple[str, Any], ...] | None

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        version: str | None = None,
        cache: bool = True,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        resources: Mapping[str, float] | None = None,
        serializer: str | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(fn, Step):
            fn = fn.fn
        _validate(fn, version, cache, retries, retry_delay, timeout, resources, serializer, name)
        functools.update_wrapper(self, fn)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(
            self,
            "identity",
            StepIdentity(
                name=name or str(getattr(fn, "__name__", "step")),
                version=version,
                cache=cache,
                serializer=serializer,
            ),
        )
        object.__setattr__(
            self,
            "hints",
            ExecutionHints(
                retries=retries,
                retry_delay=float(retry_delay),
                timeout=None if timeout is None else float(timeout),
                resources=MappingProxyType(dict(resources or {})),
            ),
        )
        signature = inspect.signature(fn)
        object.__setattr__(self, "__signature__", signature)
        object.__setattr__(self, "_qualified_name", self._qualify())
        params = signature.parameters.values()
        object.__setattr__(
            self,
            "_simple_params",
            tuple((p.name, p.default) for p in params)
            if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
            else None,
        )
        object.__setattr__(self, "_frozen", True)

    # --- frozen --------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"Step {self.name!r} is frozen: build a new one with mk.step(...) instead of "
                f"setting {name!r}"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Step {self.name!r} is frozen")

    # --- identity ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The display name of calls of this step (``name=`` or the function's name)."""
        return self.identity.name

    @property
    def qualified_name(self) -> str:
        """``module:qualname`` — the step's identity for caching (not its display name)."""
        return self._qualified_name

    def _qualify(self) -> str:
        fn = self.fn
        module = getattr(fn, "__module__", None) or "__unknown__"
        if module == "__main__":
            # a script run as `python pipeline.py` is the module `pipeline` that
            # `mlflowkit run pipeline.py:train` imports: the same steps, the same cache
            main_file = getattr(sys.modules.get("__main__"), "__file__", None)
            if main_file:
                module = os.path.splitext(os.path.basename(main_file))[0]
        qual = getattr(fn, "__qualname__", None) or self.name
        if self.identity.name != getattr(fn, "__name__", None):
            qual = f"{qual}@{self.identity.name}"
        return f"{module}:{qual}"

    @property
    def code_digest(self) -> str:
        """Digest of the step's code and the user code it refers to, transitively."""
        from mlflowkit.hashing import code_digest

        return code_digest(self.fn)

    @property
    def signature(self) -> inspect.Signature:
        """The wrapped function's signature."""
        sig: inspect.Signature = self.__signature__  # type: ignore[attr-defined]
        return sig

    def type_hints(self) -> dict[str, Any]:
        """Resolved annotations of the function (``Annotated`` kept); unresolvable ones are Any."""
        cached = self.__dict__.get("_hints_cache")
        if cached is None:
            try:
                cached = typing.get_type_hints(self.fn, include_extras=True)
            except Exception:  # an unresolvable forward reference: fall back per annotation
                cached = {}
                for pname, ann in getattr(self.fn, "__annotations__", {}).items():
                    cached[pname] = Any if isinstance(ann, str) else ann
            object.__setattr__(self, "_hints_cache", cached)
        return dict(cached)

    def _hints(self) -> dict[str, Any]:
        """``type_hints()`` without the defensive copy, for mlflowkit's own hot paths."""
        cached: dict[str, Any] | None = self.__dict__.get("_hints_cache")
        return cached if cached is not None else self.type_hints()

    def _wiring(self) -> _Wiring:
        """What tracing a call of this step reads, worked out on its first call, not each one."""
        wiring: _Wiring | None = self.__dict__.get("_wiring_cache")
        if wiring is None:
            wiring = _Wiring(self.identity.name, self._simple_params, self._hints())
            object.__setattr__(self, "_wiring_cache", wiring)
        return wiring

    # --- calling -------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = TRACER.get()
        if tracer is None:
            token = PLAIN_CALL.set(self)
            try:
                return self.fn(*args, **kwargs)
            finally:
                PLAIN_CALL.reset(token)
        result: R = tracer.call(self, args, kwargs)
        return result

    def map(self, **kwargs: Any) -> Any:
        """Call the step once per element of the list-valued keyword arguments.

        Arguments given as lists (or, inside a pipeline, as a ``Ref`` to a list) are zipped;
        the others are broadcast to every call. Outside a pipeline this returns a plain list.
        """
        tracer = TRACER.get()
        if tracer is not None:
            return tracer.map(self, kwargs)
        listed = {k: v for k, v in kwargs.items() if isinstance(v, list)}
        if not listed:
            raise PlanningError(
                f"{self.name}.map(...) expected at least one keyword argument given as a list "
                f"to fan out over, found none among {sorted(kwargs)}. Pass e.g. "
                f"{self.name}.map(x=[1, 2, 3])."
            )
        lengths = {k: len(v) for k, v in listed.items()}
        if len(set(lengths.values())) > 1:
            raise WiringError(
                f"{self.name}.map(...): the listed arguments must have equal lengths to be "
                f"zipped, found {lengths}. Make them the same length.",
                step=self.name,
            )
        n = next(iter(lengths.values()))
        return [
            self.fn(**{k: (v[i] if k in listed else v) for k, v in kwargs.items()})  # type: ignore[call-arg]
            for i in range(n)
        ]

    def __repr__(self) -> str:
        return f"<mk.Step {self.name} ({self.qualified_name})>"

    def __reduce__(self) -> Any:
        # Importable steps pickle by reference (module + qualname), like functions do. Steps
        # defined in __main__ or a notebook are rebuilt from their function, which cloudpickle
        # then ships by value, so they work on process and Dask workers too.
        module = getattr(self, "__module__", None)
        qualname = getattr(self, "__qualname__", "")
        if module and module != "__main__" and "<locals>" not in qualname:
            target: Any = sys.modules.get(module)
            for part in qualname.split("."):
                target = getattr(target, part, None)
            if target is self:
                return qualname
        return (_rebuild_step, (self.fn, self.identity, self.hints))


def _rebuild_step(fn: Any, identity: StepIdentity, hints: ExecutionHints) -> Step[Any, Any]:
    return Step(
        fn,
        version=identity.version,
        cache=identity.cache,
        serializer=identity.serializer,
        name=identity.name if identity.name != getattr(fn, "__name__", None) else None,
        retries=hints.retries,
        retry_delay=hints.retry_delay,
        timeout=hints.timeout,
        resources=dict(hints.resources),
    )


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(
    *,
    version: str | None = None,
    cache: bool = True,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    resources: Mapping[str, float] | None = None,
    serializer: str | None = None,
    name: str | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    version: str | None = None,
    cache: bool = True,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    resources: Mapping[str, float] | None = None,
    serializer: str | None = None,
    name: str | None = None,
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Declare a function as a pipeline step; usable bare (``@mk.step``) or with options.

    Parameters
    ----------
    version:
        A string that replaces code hashing for this step (you vouch for it).
    cache:
        ``False`` always executes (side effects); lineage is still recorded.
    retries, retry_delay, timeout, resources:
        Execution hints; they never change a cache key.
    serializer:
        Name of the serializer to store the output with.
    name:
        Display name of the step's calls (defaults to the function's name).
    """
    options: dict[str, Any] = {
        "version": version,
        "cache": cache,
        "retries": retries,
        "retry_delay": retry_delay,
        "timeout": timeout,
        "resources": resources,
        "serializer": serializer,
        "name": name,
    }
    if fn is not None:
        return Step(fn, **options)

    def decorate(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, **options)

    return decorate
