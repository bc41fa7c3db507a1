"""Plans: the graph a pipeline body traces to, its nodes, and the ``Ref``\\ s handed out.

This is the data the scheduler walks (layer 2: it imports only the step, wiring and
placeholder modules). Tracing a body into it is :mod:`mlflowkit.tracing`; the public
``mk.Plan`` and ``mk.Pipeline``, which also run, explain and show a plan, are
:mod:`mlflowkit.pipelines`.

Invariants
----------
* Nodes are recorded in call order, which is a topological order (a call can only use Refs
  recorded before it).
* Derived nodes (``ref.attr``, ``ref[k]``, the gathering of a fan-out) run the internal steps
  of ``OPS``; their identities (``mlflowkit.plan:_op_getitem`` ...) are part of cache keys,
  so these functions stay here, under these names.
* A ``Ref`` refuses to take part in Python control flow (``bool``, ``len``, iteration of an
  unknown length, comparisons, arithmetic, formatting): it has no value yet.
* networkx is used only to *show* a plan (``TracedPlan.graph``); the scheduler walks
  ``Node``\\ s.
"""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mlflowkit.errors import PlanningError
from mlflowkit.placeholders import SCALARS, leaves
from mlflowkit.step import Step
from mlflowkit.wiring import attribute_type, describe, item_type, tuple_length

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "OPS",
    "Call",
    "Node",
    "Recorder",
    "Ref",
    "TracedPlan",
    "find_refs",
    "new_ref",
    "site_text",
    "user_location",
    "user_site",
]

T = TypeVar("T")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


_OURS: dict[str, bool] = {}


def user_site(depth: int = 1) -> tuple[CodeType | None, int]:
    """The code object and line of the innermost frame outside mlflowkit, looking outwards
    from ``depth`` frames above the caller (0: the caller itself, 1: its caller).

    The text (``file:line``) is made only when shown (``site_text``): tracing keeps these two
    per step call. A caller that knows how many of its own frames lie between it and the
    user's code passes that depth, so that those frames are skipped without being looked at
    (looking at one makes Python build a frame object for it).
    """
    frame: FrameType | None = sys._getframe(depth + 1)
    while frame is not None:
        code = frame.f_code
        ours = _OURS.get(code.co_filename)
        if ours is None:
            filename = code.co_filename
            ours = _OURS[filename] = os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)
        if not ours:
            line = frame.f_lineno
            if line > 256:  # past Python's shared small ints: one int per line, not per call
                line = _LINES.setdefault(line, line)
            return code, line
        frame = frame.f_back
    return None, 0


#: the line numbers ``user_site`` returned, shared (each node keeps one)
_LINES: dict[int, int] = {}


def site_text(code: CodeType | None, line: int) -> str:
    """``file:line`` of a place ``user_site`` found (``<unknown>`` when it found none)."""
    return f"{code.co_filename}:{line}" if code is not None else "<unknown>"


def user_location() -> str:
    """``file:line`` of the innermost frame outside mlflowkit (the user's source line)."""
    return site_text(*user_site(1))


# ---------------------------------------------------------------------------------------------
# internal operations: the small derived nodes (ref[0], ref.attr, collecting a fan-out)
# ---------------------------------------------------------------------------------------------
def _op_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def _op_getattr(obj: Any, name: str) -> Any:
    return getattr(obj, name)


def _op_gather(*items: Any) -> list[Any]:
    return list(items)


OPS: dict[str, Step[Any, Any]] = {
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
    #: where the user's code made the call: its code object and line (``location`` is the
    #: text, made only when shown: most plans never show it)
    code: CodeType | None
    line: int
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

    @property
    def location(self) -> str:
        """``file:line`` of the call in the user's code."""
        return site_text(self.code, self.line)


class Recorder(typing.Protocol):
    """What a ``Ref`` needs from the tracer that made it (:class:`mlflowkit.tracing.Tracer`)."""

    nodes: dict[str, Node]

    def derive(self, parent: Ref[Any], op: str, arg: Any, out_type: Any) -> Ref[Any]: ...


class Ref(Generic[T]):
    """A reference to the future output of a step call, handed out while planning."""

    __slots__ = ("_node", "_tracer", "_type")
    _node: str
    _type: Any
    _tracer: Recorder

    def __init__(self, node: str, type_: Any, tracer: Recorder) -> None:
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
        if node is not None and node.step is OPS["getattr"]:  # ref.method(...)
            name, loc = node.args["name"], user_location()
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
        loc = user_location()
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


def new_ref(node: str, type_: Any, tracer: Recorder) -> Ref[Any]:
    """``Ref(node, type_, tracer)`` without the call to ``__init__`` (a third cheaper; a plan
    of a 1000-wide map makes a thousand)."""
    ref: Ref[Any] = object.__new__(Ref)
    _SET_NODE(ref, node)
    _SET_TYPE(ref, type_)
    _SET_TRACER(ref, tracer)
    return ref


def find_refs(template: Any) -> list[Ref[Any]]:
    """All Refs inside an argument template (lists, tuples, sets, dicts), in order."""
    return leaves(template, Ref)


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


class TracedPlan:
    """A traced pipeline: the graph of step calls for one set of parameter values.

    What the scheduler walks and what ``explain`` and the displays read. The public
    ``mk.Plan`` (:mod:`mlflowkit.pipelines`) is a ``TracedPlan`` that can also run, explain
    and show itself.
    """

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
        if node is not None and node.kind == "derived" and node.step is OPS["gather"]:
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
