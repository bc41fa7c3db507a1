"""Planning: tracing a pipeline body into a ``Plan`` of step calls.

Invariants
----------
* A pipeline body runs exactly once per ``plan()``, with concrete parameter values; every
  step call inside it records a ``Node`` and returns a ``Ref``. Nodes are recorded in call
  order, which is a topological order (a call can only use Refs recorded before it).
* Wiring is checked while recording: a mistake raises ``WiringError`` before anything runs.
  Derived nodes (``ref.attr``, ``ref[k]``) are typed from the parent's annotation where it
  says; a parameter fed one whose type stays unknown is listed in its call's ``Node.checks``
  and checked when the call runs, before the function (``stepcall.check_inputs``).
* A pipeline's return annotation is checked while planning where the output's static type
  decides it, else on the output value when a run ends (``Plan.check_returns``).
* Every argument, parameter and output is walked with ``placeholders.leaves``, which refuses a
  container that holds itself: planning always ends.
* A ``Ref`` refuses to take part in Python control flow (``bool``, ``len``, iteration of an
  unknown length, comparisons, arithmetic, formatting): it has no value yet.
* networkx is used only to *show* a plan (``Plan.graph``); the scheduler walks ``Node``\\ s.
"""

from __future__ import annotations

import collections.abc as cabc
import functools
import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from mlflowkit._heap import set_aside
from mlflowkit.errors import HashingError, PlanningError, WiringError
from mlflowkit.placeholders import SCALARS, leaves
from mlflowkit.step import _TRACER, Step
from mlflowkit.wiring import (
    attribute_type,
    check_value,
    compatible,
    describe,
    did_you_mean,
    is_listlike,
    is_unknown,
    item_type,
    safe_repr,
    short_repr,
    tuple_length,
    unannotate,
)

if TYPE_CHECKING:
    import networkx as nx

    from mlflowkit.display import PlanView
    from mlflowkit.run import Run

__all__ = ["Call", "Node", "Pipeline", "Plan", "Ref", "pipeline"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


_OURS: dict[str, bool] = {}


def _user_location() -> str:
    """``file:line`` of the innermost frame outside mlflowkit (the user's source line)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        ours = _OURS.get(filename)
        if ours is None:
            ours = _OURS[filename] = os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)
        if not ours:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


# ---------------------------------------------------------------------------------------------
# internal operations: the small derived nodes (ref[0], ref.attr, collecting a fan-out)
# ---------------------------------------------------------------------------------------------
def _op_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def _op_getattr(obj: Any, name: str) -> Any:
    return getattr(obj, name)


def _op_gather(*items: Any) -> list[Any]:
    return list(items)


_OPS: dict[str, Step[Any, Any]] = {
    "getitem": Step(_op_getitem, version="1", name="getitem"),
    "getattr": Step(_op_getattr, version="1", name="getattr"),
    "gather": Step(_op_gather, version="1", name="gather"),
}


# ---------------------------------------------------------------------------------------------
# graph nodes and references
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class Node:
    """One step call in a plan.

    ``args`` maps parameter names to argument *templates*: plain values possibly containing
    ``Ref``\\ s (nested in lists, tuples and dicts). ``kind`` is ``"step"`` for user steps,
    ``"derived"`` for ``ref[k]``/``ref.attr``/gathers, and ``"map"`` for a fan-out over a list
    that is only known at run time (expanded by the scheduler).
    """

    name: str
    step: Step[Any, Any]
    kind: str
    args: dict[str, Any]
    deps: tuple[str, ...]
    out_type: Any
    location: str
    persist: bool = True
    #: for kind == "map": the parameters fanned out over (name -> Ref or list); None otherwise
    fan: dict[str, Any] | None = None
    key: str | None = None
    #: parameters checked against their annotation when the call runs, before the function:
    #: they receive a derived value (``ref.attr``, ``ref[k]``) whose type planning cannot know
    checks: tuple[str, ...] = ()

    @property
    def cache(self) -> bool:
        return self.step.identity.cache


class Ref(Generic[T]):
    """A reference to the future output of a step call, handed out while planning."""

    __slots__ = ("_node", "_tracer", "_type")
    _node: str
    _type: Any
    _tracer: _Tracer

    def __init__(self, node: str, type_: Any, tracer: _Tracer) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_type", type_)
        object.__setattr__(self, "_tracer", tracer)

    @property
    def node(self) -> str:
        """Name of the step call this refers to."""
        return self._node

    @property
    def type(self) -> Any:
        """The static type of the value (from the step's return annotation)."""
        return self._type

    def __repr__(self) -> str:
        return f"Ref({self._node}: {describe(self._type)})"

    # --- derived nodes -----------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Ref[Any]:
        if isinstance(key, Ref):
            raise self._refuse("be indexed with another Ref", "pass both to a step instead")
        return self._tracer.derive(self, "getitem", key, item_type(self._type, key))

    def __getattr__(self, name: str) -> Ref[Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._tracer.derive(self, "getattr", name, attribute_type(self._type, name))

    def __setattr__(self, name: str, value: Any) -> None:
        raise self._refuse(f"have attribute {name!r} set", "set it inside a step")

    def __iter__(self) -> Iterator[Ref[Any]]:
        length = tuple_length(self._type)
        if length is None:
            raise self._refuse(
                "be iterated or unpacked (its length is unknown while planning)",
                "annotate the step's return as tuple[A, B] to unpack it, or use step.map(...) "
                "to fan out over a list",
            )
        return iter([self[i] for i in range(length)])

    def __len__(self) -> int:
        raise self._refuse("have len() taken", "compute the length inside a step")

    def __bool__(self) -> bool:
        raise self._refuse(
            "be used as a condition (if/while/and/or/not)",
            "branch on pipeline parameters, or move the decision into a step",
        )

    def __contains__(self, item: Any) -> bool:
        raise self._refuse("be searched with 'in'", "do it inside a step")

    def __format__(self, spec: str) -> str:
        raise self._refuse("be formatted into a string", "format it inside a step")

    def __hash__(self) -> int:
        return id(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        node = self._tracer.nodes.get(self._node)
        if node is not None and node.step is _OPS["getattr"]:  # ref.method(...)
            name, loc = node.args["name"], _user_location()
            raise PlanningError(
                f"The output of step {node.deps[0]!r} cannot have its method {name!r} called "
                f"while the pipeline is planned (at {loc}): it is a Ref to a value that does not "
                f"exist yet. Fix: call .{name}(...) inside a step, which receives the value "
                f"itself.",
                step=node.deps[0],
                location=loc,
            )
        raise self._refuse("be called", "call it inside a step, which receives the value itself")

    # NumPy: np.mean(ref), np.sqrt(ref), np.asarray(ref) reach these instead of treating the
    # Ref as an opaque object (and failing later with a confusing TypeError)
    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        name = f"{getattr(func, '__module__', None) or 'numpy'}.{func.__name__}"
        raise self._refuse(
            f"be passed to {name.replace('numpy.', 'np.', 1)}()",
            "call NumPy inside a step, which receives the array itself",
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raise self._refuse(
            f"be passed to np.{ufunc.__name__}()",
            "call NumPy inside a step, which receives the array itself",
        )

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse(
            "be converted to a NumPy array",
            "call NumPy inside a step, which receives the array itself",
        )

    def _refuse(self, what: str, fix: str) -> PlanningError:
        loc = _user_location()
        return PlanningError(
            f"The output of step {self._node!r} cannot {what} while the pipeline is planned "
            f"(at {loc}): it is a Ref to a value that does not exist yet. Fix: {fix}.",
            step=self._node,
            location=loc,
        )


_COMPARISONS = {"__eq__": "==", "__ne__": "!=", "__lt__": "<", "__le__": "<=", "__gt__": ">"}
_COMPARISONS["__ge__"] = ">="
_CONVERSIONS = {"__int__": "int", "__float__": "float", "__index__": "an index"}
_CONVERSIONS.update({"__complex__": "complex", "__round__": "round"})


def _refuse_op(opname: str) -> Callable[..., Any]:
    if opname in _COMPARISONS:
        what = f"be compared with {_COMPARISONS[opname]}"
        fix = (
            "branch on a pipeline parameter, or make the comparison and the decision inside a "
            "step (it receives the value and can return what the pipeline needs)"
        )
    elif opname in _CONVERSIONS:
        what = f"be converted with {_CONVERSIONS[opname]}()"
        fix = "convert it inside a step, which receives the value itself"
    else:
        what = f"be used with the operator {opname}"
        fix = "do the arithmetic in a step, which receives the value itself"

    def method(self: Ref[Any], *args: Any) -> Any:
        raise self._refuse(what, fix)

    method.__name__ = opname
    return method


_REFUSED_OPERATORS = (
    *_COMPARISONS,
    "__add__",
    "__radd__",
    "__sub__",
    "__rsub__",
    "__mul__",
    "__rmul__",
    "__truediv__",
    "__rtruediv__",
    "__floordiv__",
    "__rfloordiv__",
    "__mod__",
    "__rmod__",
    "__pow__",
    "__rpow__",
    "__matmul__",
    "__rmatmul__",
    "__neg__",
    "__pos__",
    "__abs__",
    "__invert__",
    "__and__",
    "__rand__",
    "__or__",
    "__ror__",
    "__xor__",
    "__rxor__",
    *_CONVERSIONS,
)
for _op in _REFUSED_OPERATORS:
    setattr(Ref, _op, _refuse_op(_op))

_SET_NODE = vars(Ref)["_node"].__set__
_SET_TYPE = vars(Ref)["_type"].__set__
_SET_TRACER = vars(Ref)["_tracer"].__set__


def _new_ref(node: str, type_: Any, tracer: _Tracer) -> Ref[Any]:
    """``Ref(node, type_, tracer)`` without the call to ``__init__`` (a third cheaper; a plan
    of a 1000-wide map makes a thousand)."""
    ref: Ref[Any] = object.__new__(Ref)
    _SET_NODE(ref, node)
    _SET_TYPE(ref, type_)
    _SET_TRACER(ref, tracer)
    return ref


def _fast_bind(
    step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """``Signature.bind`` + ``apply_defaults`` for the common simple case, else None.

    Anything unusual (too many, unknown, duplicate or missing arguments) returns None so that
    the general path binds it and explains the mistake.
    """
    params = step._simple_params
    if params is None or len(args) > len(params):
        return None
    bound: dict[str, Any] = {}
    for (name, _), value in zip(params, args, strict=False):
        bound[name] = value
    used = 0
    for name, default in params[len(args) :]:
        if name in kwargs:
            bound[name] = kwargs[name]
            used += 1
        elif default is inspect.Parameter.empty:
            return None
        else:
            bound[name] = default
    if used != len(kwargs):
        return None
    return bound


def find_refs(template: Any) -> list[Ref[Any]]:
    """All Refs inside an argument template (lists, tuples, sets, dicts), in order."""
    return leaves(template, Ref)


# ---------------------------------------------------------------------------------------------
# the tracer
# ---------------------------------------------------------------------------------------------
class _Tracer:
    """Receives step calls while a pipeline body runs and records them as nodes."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._counts: dict[str, int] = {}
        self._prefix: list[str] = []
        self._scopes: dict[str, int] = {}  # calls of each nested pipeline, per scope
        self._derived: dict[tuple[str, str, Any], Ref[Any]] = {}
        self.closed = False
        #: ``mk.publish`` calls, in order, and the nodes made by ``mk.artifact`` (node name ->
        #: the resolved version); filled by ``mlflowkit.registry.pipeline``
        self.publishes: list[Any] = []
        self.consumes: dict[str, Any] = {}

    def close(self) -> dict[str, Node]:
        """End planning and hand over the nodes.

        The tracer lets go of them: its Refs (held in the nodes' arguments) point back at it,
        and without this every plan would be a reference cycle, freed only by the cyclic
        garbage collector.
        """
        nodes, self.nodes, self._derived, self.closed = self.nodes, {}, {}, True
        return nodes

    # names ------------------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        if self._prefix:
            base = "".join(f"{p}." for p in self._prefix) + base
        count = self._counts.get(base, 0) + 1
        self._counts[base] = count
        name = base if count == 1 else f"{base}-{count}"
        while name in self.nodes:  # a derived name that happens to collide
            count += 1
            self._counts[base] = count
            name = f"{base}-{count}"
        return name

    def _add(self, node: Node) -> Ref[Any]:
        self.nodes[node.name] = node
        return _new_ref(node.name, node.out_type, self)

    # recording --------------------------------------------------------------------------
    def _bind(
        self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], loc: str
    ) -> dict[str, Any]:
        fast = _fast_bind(step, args, kwargs)
        if fast is not None:
            return fast
        try:
            bound = step.signature.bind(*args, **kwargs)
        except TypeError as exc:
            params = ", ".join(step.signature.parameters)
            hint = did_you_mean(kwargs, step.signature)
            raise WiringError(
                f"Step {step.name!r} called with arguments that do not fit its signature "
                f"({step.name}({params})) at {loc}: {exc}.{hint} Fix the call's arguments.",
                step=step.name,
                location=loc,
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _check_arguments(
        self, step: Step[Any, Any], name: str, arguments: dict[str, Any], loc: str
    ) -> tuple[str, ...]:
        """Check a call's arguments against the step's annotations (``WiringError``).

        Returns the parameters to check again when the call runs (see ``Node.checks``).
        """
        hints = step._hints()
        simple = step._simple_params is not None
        params = step.signature.parameters
        checks: list[str] = []
        for pname, value in arguments.items():
            expected = hints.get(pname)
            if expected is None:
                continue
            if simple:  # one value per parameter
                if self._check_one(step, name, pname, value, expected, loc):
                    checks.append(pname)
                continue
            kind = params[pname].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                items = list(value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                items = list(value.values())
            else:
                items = [value]
            if any([self._check_one(step, name, pname, item, expected, loc) for item in items]):
                checks.append(pname)
        return tuple(checks)

    def _check_one(
        self, step: Step[Any, Any], name: str, pname: str, value: Any, expected: Any, loc: str
    ) -> bool:
        """Check one argument; True when it must be checked again at run time (it holds a
        derived value of a type planning cannot know, and ``expected`` says something)."""
        if isinstance(value, Ref):
            if not compatible(value.type, expected):
                node = self.nodes.get(value._node)
                fix = "Fix the wiring, or change one of the two annotations"
                if (
                    node is not None
                    and node.step is _OPS["getattr"]
                    and typing.get_origin(unannotate(value.type)) is cabc.Callable
                ):
                    fix = (
                        f"{node.args['name']!r} is a method: call it inside a step, which "
                        f"receives the value itself"
                    )
                raise WiringError(
                    f"Step {name!r}, parameter {pname!r} (at {loc}): expected "
                    f"{describe(expected)}, found {describe(value.type)} (the output of step "
                    f"{value.node!r}). {fix}.",
                    step=name,
                    parameter=pname,
                    expected=expected,
                    actual=value.type,
                    location=loc,
                )
            return self._unknown(value) and not is_unknown(expected)
        refs = find_refs(value)
        if refs:
            if isinstance(value, (list, tuple)) and is_listlike(expected):
                elem_expected = item_type(expected, 0)
                return any(
                    [self._check_one(step, name, pname, item, elem_expected, loc) for item in value]
                )
            # other nested structures: checked when the call runs if they hold a derived value
            # of unknown type
            return not is_unknown(expected) and any(self._unknown(r) for r in refs)
        if not check_value(value, expected):
            raise WiringError(
                f"Step {name!r}, parameter {pname!r} (at {loc}): expected "
                f"{describe(expected)}, found {describe(type(value))} ({short_repr(value)}). "
                f"Pass a value of the annotated type.",
                step=name,
                parameter=pname,
                expected=expected,
                actual=type(value),
                location=loc,
            )
        return False

    def _unknown(self, ref: Ref[Any]) -> bool:
        """Whether ``ref`` is a derived value (``ref.attr``, ``ref[k]``) of unknown type."""
        if not is_unknown(ref._type):
            return False
        node = self.nodes.get(ref._node)
        return node is not None and node.kind == "derived"

    def call(self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        loc = _user_location()
        arguments = self._bind(step, args, kwargs, loc)
        name = self._unique(step.name)
        try:
            checks = self._check_arguments(step, name, arguments, loc)
            return self._record(step, name, arguments, loc, checks)
        except HashingError as exc:  # an argument that holds itself: say where
            raise HashingError(
                f"Step {name!r} (at {loc}): {exc}", type_name=exc.type_name
            ) from None

    def map(self, step: Step[Any, Any], kwargs: dict[str, Any]) -> Ref[Any]:
        loc = _user_location()
        try:
            return self._map(step, kwargs, loc)
        except HashingError as exc:  # an argument that holds itself: say where
            raise HashingError(
                f"{step.name}.map(...) at {loc}: {exc}", type_name=exc.type_name
            ) from None

    def _record(
        self,
        step: Step[Any, Any],
        name: str,
        arguments: dict[str, Any],
        loc: str,
        checks: tuple[str, ...] = (),
    ) -> Ref[Any]:
        refs: list[str] = []
        for value in arguments.values():
            if type(value) is Ref:
                refs.append(value._node)
            elif type(value) not in SCALARS:
                refs.extend(r.node for r in find_refs(value))
        deps = tuple(dict.fromkeys(refs))
        out_type = step._hints().get("return", Any)
        return self._add(Node(name, step, "step", arguments, deps, out_type, loc, checks=checks))

    def derive(self, parent: Ref[Any], op: str, arg: Any, out_type: Any) -> Ref[Any]:
        if self.closed:
            raise PlanningError(
                f"Ref of step {parent.node!r} was indexed after its plan was made: expected "
                f"Refs to be used only inside the pipeline body while it is planned. Index it "
                f"inside the pipeline (or inside a step)."
            )
        try:
            memo_key = (parent.node, op, arg)
            hash(memo_key)
        except TypeError:
            raise WiringError(
                f"Ref of step {parent.node!r} indexed with an unhashable key {arg!r}. "
                f"Use an int, str or tuple key.",
                step=parent.node,
            ) from None
        if memo_key in self._derived:
            return self._derived[memo_key]
        suffix = arg if isinstance(arg, str) else safe_repr(arg)
        name = self._unique_derived(f"{parent.node}.{suffix}")
        args = {"obj": parent, "key" if op == "getitem" else "name": arg}
        ref = self._add(
            Node(
                name,
                _OPS[op],
                "derived",
                args,
                (parent.node,),
                out_type,
                _user_location(),
                persist=False,  # a view of its parent: stored only when returned
            )
        )
        self._derived[memo_key] = ref
        return ref

    def _unique_derived(self, base: str) -> str:
        name, n = base, 1
        while name in self.nodes:
            n += 1
            name = f"{base}-{n}"
        return name

    def _map(self, step: Step[Any, Any], kwargs: dict[str, Any], loc: str) -> Ref[Any]:
        hints = step._hints()
        fan: dict[str, Any] = {}
        for pname, value in kwargs.items():
            if isinstance(value, list) and not find_refs(value):
                fan[pname] = value
            elif isinstance(value, list):
                fan[pname] = value  # a planning-time list holding Refs: still fans out
            elif isinstance(value, Ref):
                vtype = unannotate(value.type)
                if is_listlike(vtype) or (vtype is Any and not is_listlike(hints.get(pname, Any))):
                    fan[pname] = value
        if not fan:
            refs = ", ".join(
                f"{p}=Ref[{describe(v.type)}] (output of {v.node!r})"
                for p, v in kwargs.items()
                if isinstance(v, Ref)
            )
            found = f"; the Refs given are not lists: {refs}" if refs else ""
            raise WiringError(
                f"{step.name}.map(...) at {loc}: expected at least one keyword argument given "
                f"as a list or a Ref to a list, found none among {sorted(kwargs)}{found}. "
                f"Pass e.g. {step.name}.map(x=[1, 2, 3]), or annotate the producing step's "
                f"return as list[...].",
                step=step.name,
                location=loc,
            )
        base = self._unique(step.name)
        out_type: Any = list.__class_getitem__(hints.get("return", Any))
        if all(isinstance(v, list) for v in fan.values()):
            lengths = {k: len(v) for k, v in fan.items()}
            if len(set(lengths.values())) > 1:
                raise WiringError(
                    f"{step.name}.map(...) at {loc}: the listed arguments must have equal "
                    f"lengths to be zipped, found {lengths}. Make them the same length.",
                    step=base,
                    location=loc,
                )
            n = next(iter(lengths.values()))
            elems = self._elements(step, base, kwargs, fan, n, loc)
            gather_args = {"items": tuple(elems)}
            deps = tuple(e._node for e in elems)
            return self._add(
                Node(
                    base, _OPS["gather"], "derived", gather_args, deps, out_type, loc, persist=False
                )
            )
        # fan-out decided at run time: check the broadcast and element types now
        checks: list[str] = []
        for pname, value in kwargs.items():
            if pname not in step.signature.parameters and not any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in step.signature.parameters.values()
            ):
                raise WiringError(
                    f"{step.name}.map(...) at {loc}: unknown parameter {pname!r}; the step takes "
                    f"{list(step.signature.parameters)}.",
                    step=base,
                    parameter=pname,
                    location=loc,
                )
            expected = hints.get(pname, Any)
            if pname in fan:
                if isinstance(value, Ref):
                    elem = item_type(value.type, 0)
                    if not compatible(elem, expected):
                        raise WiringError(
                            f"Step {base!r}, parameter {pname!r} (at {loc}): expected elements "
                            f"of type {describe(expected)}, found {describe(elem)} (elements "
                            f"of step {value.node!r}'s output). Fix the wiring.",
                            step=base,
                            parameter=pname,
                            expected=expected,
                            actual=elem,
                            location=loc,
                        )
                elif any([self._check_one(step, base, pname, v, expected, loc) for v in value]):
                    checks.append(pname)
            elif self._check_one(step, base, pname, value, expected, loc):
                checks.append(pname)
        missing = [
            p.name
            for p in step.signature.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            and p.name not in kwargs
        ]
        if missing:
            raise WiringError(
                f"{step.name}.map(...) at {loc}: missing required argument(s) {missing}.",
                step=base,
                location=loc,
            )
        deps = tuple(dict.fromkeys(r.node for r in find_refs(kwargs)))
        return self._add(
            Node(
                base,
                step,
                "map",
                dict(kwargs),
                deps,
                out_type,
                loc,
                persist=False,
                fan=fan,
                checks=tuple(checks),
            )
        )

    def _elements(
        self,
        step: Step[Any, Any],
        base: str,
        kwargs: dict[str, Any],
        fan: dict[str, list[Any]],
        n: int,
        loc: str,
    ) -> list[Ref[Any]]:
        """The ``n`` element calls of a map over planning-time lists, ``base[0]``, ``base[1]``, …

        Binding, the broadcast arguments' checks and their dependencies are done once; each
        element then only checks its own items. An unusual signature (or a binding error, which
        the general path explains) binds each element on its own.
        """
        first = {k: (v[0] if k in fan else v) for k, v in kwargs.items()} if n else {}
        bound = _fast_bind(step, (), first) if n else None
        if bound is None:
            elems: list[Ref[Any]] = []
            for i in range(n):
                call_kwargs = {k: (v[i] if k in fan else v) for k, v in kwargs.items()}
                arguments = self._bind(step, (), call_kwargs, loc)
                ename = f"{base}[{i}]"
                later = self._check_arguments(step, ename, arguments, loc)
                elems.append(self._record(step, ename, arguments, loc, later))
            return elems
        hints = step._hints()
        broadcast = {k: v for k, v in bound.items() if k not in fan}
        broadcast_checks = self._check_arguments(step, f"{base}[0]", broadcast, loc)
        checks = [(pname, hints.get(pname), fan[pname]) for pname in fan]
        out_type = hints.get("return", Any)
        shared = bool(find_refs(broadcast))
        nodes = self.nodes
        elems = []
        for i in range(n):
            ename = f"{base}[{i}]"
            arguments = dict(bound)
            plain = not shared
            later = broadcast_checks
            for pname, expected, values in checks:
                value = arguments[pname] = values[i]
                if type(value) not in SCALARS:
                    plain = False
                if (
                    expected is not None
                    and type(value) is not expected
                    and self._check_one(step, ename, pname, value, expected, loc)
                ):
                    later = (*later, pname)
            if plain:  # no upstream value among the arguments (the common case)
                nodes[ename] = Node(ename, step, "step", arguments, (), out_type, loc)
                elems.append(_new_ref(ename, out_type, self))
            else:
                elems.append(self._record(step, ename, arguments, loc, later))
        return elems

    # nested pipelines ---------------------------------------------------------------------
    def enter(self, prefix: str) -> None:
        """Prefix the following step calls with a nested pipeline's name (``prep-2.`` when it
        is the second call of ``prep`` at this level)."""
        scope = "".join(f"{p}." for p in self._prefix) + prefix
        count = self._scopes.get(scope, 0) + 1
        self._scopes[scope] = count
        self._prefix.append(prefix if count == 1 else f"{prefix}-{count}")

    def leave(self) -> None:
        self._prefix.pop()


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Call:
    """One of the user's step calls in a plan, named as a run records it.

    Internal nodes (``ref[i]`` of an unpacked tuple, ``ref.attr``, the gathering of a fan-out)
    are not calls: they do no work of their own. A fan-out over planning-time lists is one
    call per element (``fit[0]``, ``fit[1]``, ...); so is a fan-out over another fan-out's
    results, whose number is known too. A fan-out over a list made by a step is sized only at
    run time: it is one entry, ``name[*]``, with ``sized`` False.
    """

    name: str
    #: the plan node it comes from (a ``map`` node for a fan-out element)
    node: str
    #: the step calls whose results it takes, in order (``[*]`` entries for run-time fan-outs)
    after: tuple[str, ...]
    #: the arguments given as plain values (no upstream result in them)
    params: dict[str, Any]
    sized: bool = True


class Plan:
    """A traced pipeline: the graph of step calls for one set of parameter values."""

    def __init__(
        self,
        pipeline: str,
        params: dict[str, Any],
        nodes: dict[str, Node],
        output: Any,
        *,
        returns: Any = Any,
        check_returns: bool = False,
        publishes: list[Any] | None = None,
        consumes: dict[str, Any] | None = None,
        source: dict[str, str] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.params = params
        self.nodes = nodes
        self.output = output
        #: what the body published (``mk.publish``) and the named artifact versions it read
        #: (``mk.artifact``: node name -> version); empty for most plans
        self.publishes: list[Any] = publishes or []
        self.consumes: dict[str, Any] = consumes or {}
        #: where the pipeline function lives (module, qualname, file): what ``mk.reproduce``
        #: imports to plan a past run again
        self.source: dict[str, str] = source or {}
        #: the pipeline's return annotation; ``check_returns``: planning could not prove that
        #: the output fits it, so a run checks the output value (``driver``)
        self.returns = returns
        self.check_returns = check_returns
        self._graph: nx.DiGraph | None = None

    @property
    def steps(self) -> list[str]:
        """Names of the step calls in topological order."""
        return list(self.nodes)

    @property
    def graph(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` with one node per step call (attributes ``step``, ``key``)."""
        import networkx as nx

        graph = nx.DiGraph()
        for node in self.nodes.values():
            graph.add_node(
                node.name, step=node.step, key=node.key, kind=node.kind, location=node.location
            )
        for node in self.nodes.values():
            for dep in node.deps:
                graph.add_edge(dep, node.name)
        return graph

    def calls(self) -> list[Call]:
        """The user's step calls in topological order, as a run will record them.

        Internal nodes are left out and fan-outs are counted element by element (see
        :class:`Call`); ``len(plan.calls())`` is the count every summary of the plan and of
        its runs gives (a fan-out sized at run time counts once here, as ``name[*]``).
        """
        sources: dict[str, tuple[str, ...]] = {}
        out: list[Call] = []

        def producers(template: Any) -> tuple[str, ...]:
            found = (c for ref in find_refs(template) for c in sources[ref.node])
            return tuple(dict.fromkeys(found))

        def plain(args: dict[str, Any]) -> dict[str, Any]:
            return {p: v for p, v in args.items() if type(v) in SCALARS or not find_refs(v)}

        for name, node in self.nodes.items():
            if node.kind == "derived":  # a view or a gathering: stands for what it reads
                sources[name] = producers(node.args)
                continue
            if node.kind == "step":
                sources[name] = (name,)
                out.append(Call(name, name, producers(node.args), plain(node.args)))
                continue
            items: dict[str, list[Any]] = {}
            for p, source in (node.fan or {}).items():
                known = self._items(source)
                if known is not None:
                    items[p] = known
            sizes = {len(v) for v in items.values()}
            if len(items) != len(node.fan or {}) or len(sizes) != 1:
                sources[name] = (f"{name}[*]",)
                out.append(
                    Call(f"{name}[*]", name, producers(node.args), plain(node.args), sized=False)
                )
                continue
            elements = []
            for i in range(sizes.pop()):
                args = {p: (items[p][i] if p in items else v) for p, v in node.args.items()}
                elements.append(f"{name}[{i}]")
                out.append(Call(elements[-1], name, producers(args), plain(args)))
            sources[name] = tuple(elements)
        return out

    def _items(self, source: Any) -> list[Any] | None:
        """The items a fan-out goes over, when known while planning (else None)."""
        if isinstance(source, list):
            return source
        node = self.nodes.get(source.node) if isinstance(source, Ref) else None
        if node is not None and node.kind == "derived" and node.step is _OPS["gather"]:
            return list(node.args["items"])
        return None

    def describe_calls(self) -> str:
        """``"14 step calls"``, or ``"9 step calls and a fan-out sized at run time"``."""
        calls = self.calls()
        sized = sum(c.sized for c in calls)
        text = f"{sized} step call{'' if sized == 1 else 's'}"
        unsized = len(calls) - sized
        if unsized:
            text += " and " + ("a fan-out" if unsized == 1 else f"{unsized} fan-outs")
            text += " sized at run time"
        return text

    def output_nodes(self) -> list[str]:
        """Names of the nodes whose values make up the pipeline's return value."""
        return list(dict.fromkeys(r.node for r in find_refs(self.output)))

    def to_mermaid(self) -> str:
        """The DAG as Mermaid ``flowchart`` text."""
        ids = {name: f"n{i}" for i, name in enumerate(self.nodes)}
        lines = ["flowchart TD"]
        for name, node in self.nodes.items():
            label = name.replace('"', "'")
            shape = f'(["{label}"])' if node.kind == "derived" else f'["{label}"]'
            lines.append(f"    {ids[name]}{shape}")
        for name, node in self.nodes.items():
            lines.extend(f"    {ids[dep]} --> {ids[name]}" for dep in node.deps)
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """The DAG in Graphviz DOT."""
        lines = [f'digraph "{self.pipeline}" {{', "    rankdir=TB;", "    node [shape=box];"]
        for name, node in self.nodes.items():
            label = name.replace('"', '\\"')
            extra = ", shape=ellipse" if node.kind == "derived" else ""
            lines.append(f'    "{label}" [label="{label}"{extra}];')
        for name, node in self.nodes.items():
            for dep in node.deps:
                lines.append(f'    "{dep}" -> "{name}";'.replace('\\"', '"'))
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<mk.Plan {self.pipeline} ({self.describe_calls()})>"

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
        from mlflowkit.driver import run_plan  # the run machinery sits in a layer above

        return run_plan(
            self,
            executor=executor,
            store=store,
            max_workers=max_workers,
            progress=progress,
            force=force,
        )

    def explain(self, store: Any = None) -> list[dict[str, Any]]:
        """For each step call: would a run now hit the cache or execute, and why."""
        from mlflowkit.driver import explain_plan

        return explain_plan(self, store)

    def show(self, store: Any = None) -> PlanView:
        """A picture of the DAG for notebooks.

        Without ``store`` the step calls are drawn unmarked. With a store (a ``Store`` or a
        URL), each call is coloured by ``explain(store)``: *cached* or *will execute*, with
        the reason as its tooltip. In a notebook the returned object renders as the picture;
        ``.svg()`` gives the SVG text.
        """
        from mlflowkit.display import PlanView

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
            loc = _user_location()
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
                loc = _user_location()
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
        if _TRACER.get() is not None:
            raise PlanningError(
                f"Pipeline {self.name!r}: .plan() was called while another pipeline is being "
                f"planned. Call the pipeline itself ({self.name}(...)) to nest it."
            )
        params = self._bind(args, kwargs)
        tracer = _Tracer()
        token = _TRACER.set(tracer)
        try:
            with set_aside():  # the existing heap is left out of the GC passes of planning
                output = self.fn(**params)  # type: ignore[call-arg]
        finally:
            _TRACER.reset(token)
        publishes, consumes = tracer.publishes, tracer.consumes
        nodes = tracer.close()
        _check_output(self.name, output)
        check_returns = self._check_return(output)
        for name in dict.fromkeys(r.node for r in find_refs(output)):
            nodes[name].persist = True
        for published in publishes:  # a published value is stored like an output
            for ref in find_refs(published.value):
                nodes[ref.node].persist = True
        return Plan(
            self.name,
            params,
            nodes,
            output,
            returns=self._returns(),
            check_returns=check_returns,
            publishes=publishes,
            consumes=consumes,
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
        tracer = _TRACER.get()
        if tracer is not None:
            if not isinstance(tracer, _Tracer):
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


def _check_output(name: str, output: Any) -> None:
    try:
        found = leaves(output, (Ref, Step))
    except HashingError as exc:  # an output that holds itself
        raise HashingError(
            f"Pipeline {name!r} returned a value that holds itself: {exc}", type_name=exc.type_name
        ) from None
    for item in found:
        if isinstance(item, Step):
            raise PlanningError(
                f"Pipeline {name!r} returned the step {item.name!r} itself instead of calling "
                f"it. Return {item.name}(...)."
            )


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
