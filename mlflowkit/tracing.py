"""Tracing: running a pipeline body once and recording its step calls as plan nodes.

Invariants
----------
* A pipeline body runs exactly once per ``trace``, with concrete parameter values; every step
  call inside it records a ``Node`` and returns a ``Ref`` (:mod:`mlflowkit.plan`). Nodes are
  recorded in call order, which is a topological order.
* Wiring is checked while recording: a mistake raises ``WiringError`` before anything runs.
  Derived nodes (``ref.attr``, ``ref[k]``) are typed from the parent's annotation where it
  says; a parameter fed one whose type stays unknown is listed in its call's ``Node.checks``
  and checked when the call runs, before the function (``stepcall.check_inputs``).
* Every argument, parameter and output is walked with ``placeholders.leaves``, which refuses a
  container that holds itself: tracing always ends.
* One tracer at a time per context (``step.TRACER``); ``close()`` lets go of the nodes, so a
  finished plan holds no reference cycle through its tracer.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import typing
from collections.abc import Callable
from types import CodeType
from typing import Any, NamedTuple

from mlflowkit._heap import set_aside
from mlflowkit.errors import HashingError, PlanningError, WiringError
from mlflowkit.placeholders import SCALARS, leaves
from mlflowkit.plan import OPS, Node, Ref, find_refs, new_ref, site_text, user_site
from mlflowkit.step import TRACER, Step
from mlflowkit.wiring import (
    check_value,
    compatible,
    describe,
    did_you_mean,
    is_listlike,
    is_unknown,
    item_type,
    safe_repr,
    short_repr,
    unannotate,
)

__all__ = ["Traced", "Tracer", "refuse_nested_plan", "trace"]


def _fast_bind(wiring: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``Signature.bind`` + ``apply_defaults`` for the common simple case, else None.

    ``wiring`` is the step's ``_wiring()``. Anything unusual (too many, unknown, duplicate or
    missing arguments) returns None so that the general path binds it and explains the mistake.
    """
    params = wiring.params
    if params is None or len(args) > len(params):
        return None
    names = wiring.names
    bound: dict[str, Any] = {}
    for i, value in enumerate(args):  # (``zip(..., strict=False)`` costs more, per call)
        bound[names[i]] = value
    if len(args) == len(params) and not kwargs:
        return bound
    used = 0
    for name, default, _ in params[len(args) :]:
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


#: where a call was made in the user's code: its code object and line (``plan.user_site``)
Site = tuple[CodeType | None, int]


class Tracer:
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
        return new_ref(node.name, node.out_type, self)

    # recording --------------------------------------------------------------------------
    def _bind(
        self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], site: Site
    ) -> dict[str, Any]:
        fast = _fast_bind(step._wiring(), args, kwargs)
        if fast is not None:
            return fast
        try:
            bound = step.signature.bind(*args, **kwargs)
        except TypeError as exc:
            loc = site_text(*site)
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
        self, step: Step[Any, Any], name: str, arguments: dict[str, Any], site: Site
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
                if self._check_one(step, name, pname, value, expected, site):
                    checks.append(pname)
                continue
            kind = params[pname].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                items = list(value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                items = list(value.values())
            else:
                items = [value]
            if any([self._check_one(step, name, pname, item, expected, site) for item in items]):
                checks.append(pname)
        return tuple(checks)

    def _check_one(
        self, step: Step[Any, Any], name: str, pname: str, value: Any, expected: Any, site: Site
    ) -> bool:
        """Check one argument; True when it must be checked again at run time (it holds a
        derived value of a type planning cannot know, and ``expected`` says something)."""
        if isinstance(value, Ref):
            if not compatible(value.type, expected):
                loc = site_text(*site)
                node = self.nodes.get(value._node)
                fix = "Fix the wiring, or change one of the two annotations"
                if (
                    node is not None
                    and node.step is OPS["getattr"]
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
                    [
                        self._check_one(step, name, pname, item, elem_expected, site)
                        for item in value
                    ]
                )
            # other nested structures: checked when the call runs if they hold a derived value
            # of unknown type
            return not is_unknown(expected) and any(self._unknown(r) for r in refs)
        if not check_value(value, expected):
            loc = site_text(*site)
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
        # past this frame and its caller, mlflowkit's own (``Step.__call__``, ``mk.artifact``)
        site = user_site(2)
        wiring = step._wiring()
        arguments = _fast_bind(wiring, args, kwargs)
        if arguments is None:  # not the simple case: bound, or the mistake explained, here
            arguments = self._bind(step, args, kwargs, site)
        name = self._unique(wiring.name)
        params, out_type = wiring.params, wiring.returns
        try:
            if params is None:  # a parameter may take several values (``*args``, ``**kw``)
                checks = self._check_arguments(step, name, arguments, site)
                return self._record(step, name, arguments, site, checks)
            # one value per parameter: checked, and its upstream calls collected, in one pass
            later: list[str] = []
            refs: list[str] = []
            for pname, _, expected in params:
                value = arguments[pname]
                kind = type(value)
                if kind is Ref:
                    refs.append(value._node)
                    if expected is None or value._type is expected:
                        continue  # fits as it is, and needs no check when it runs
                elif kind in SCALARS:
                    if expected is None or kind is expected:
                        continue
                else:
                    refs.extend([r._node for r in find_refs(value)])
                    if expected is None:
                        continue
                if self._check_one(step, name, pname, value, expected, site):
                    later.append(pname)
        except HashingError as exc:  # an argument that holds itself: say where
            raise HashingError(
                f"Step {name!r} (at {site_text(*site)}): {exc}", type_name=exc.type_name
            ) from None
        deps = tuple(refs) if len(refs) < 2 else tuple(dict.fromkeys(refs))
        self.nodes[name] = Node(
            name, step, "step", arguments, deps, out_type, site[0], site[1], checks=tuple(later)
        )
        return new_ref(name, out_type, self)

    def map(self, step: Step[Any, Any], kwargs: dict[str, Any]) -> Ref[Any]:
        site = user_site(2)  # past this frame and ``Step.map``
        try:
            return self._map(step, kwargs, site)
        except HashingError as exc:  # an argument that holds itself: say where
            raise HashingError(
                f"{step.name}.map(...) at {site_text(*site)}: {exc}", type_name=exc.type_name
            ) from None

    def _record(
        self,
        step: Step[Any, Any],
        name: str,
        arguments: dict[str, Any],
        site: Site,
        checks: tuple[str, ...] = (),
    ) -> Ref[Any]:
        refs: list[str] = []
        for value in arguments.values():
            if type(value) is Ref:
                refs.append(value._node)
            elif type(value) not in SCALARS:
                refs.extend(r.node for r in find_refs(value))
        deps = tuple(dict.fromkeys(refs))
        out_type = step._wiring().returns
        return self._add(Node(name, step, "step", arguments, deps, out_type, *site, checks=checks))

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
                OPS[op],
                "derived",
                args,
                (parent.node,),
                out_type,
                *user_site(2),  # past this frame and ``Ref.__getitem__`` (or ``__getattr__``)
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

    def _map(self, step: Step[Any, Any], kwargs: dict[str, Any], site: Site) -> Ref[Any]:
        loc = site_text(*site)  # once per map, for its messages
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
            elems = self._elements(step, base, kwargs, fan, n, site)
            gather_args = {"items": tuple(elems)}
            deps = tuple(e._node for e in elems)
            return self._add(
                Node(
                    base,
                    OPS["gather"],
                    "derived",
                    gather_args,
                    deps,
                    out_type,
                    *site,
                    persist=False,
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
                elif any([self._check_one(step, base, pname, v, expected, site) for v in value]):
                    checks.append(pname)
            elif self._check_one(step, base, pname, value, expected, site):
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
                *site,
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
        site: Site,
    ) -> list[Ref[Any]]:
        """The ``n`` element calls of a map over planning-time lists, ``base[0]``, ``base[1]``, …

        Binding, the broadcast arguments' checks and their dependencies are done once; each
        element then only checks its own items. An unusual signature (or a binding error, which
        the general path explains) binds each element on its own.
        """
        first = {k: (v[0] if k in fan else v) for k, v in kwargs.items()} if n else {}
        bound = _fast_bind(step._wiring(), (), first) if n else None
        if bound is None:
            elems: list[Ref[Any]] = []
            for i in range(n):
                call_kwargs = {k: (v[i] if k in fan else v) for k, v in kwargs.items()}
                arguments = self._bind(step, (), call_kwargs, site)
                ename = f"{base}[{i}]"
                later = self._check_arguments(step, ename, arguments, site)
                elems.append(self._record(step, ename, arguments, site, later))
            return elems
        hints = step._hints()
        broadcast = {k: v for k, v in bound.items() if k not in fan}
        broadcast_checks = self._check_arguments(step, f"{base}[0]", broadcast, site)
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
                    and self._check_one(step, ename, pname, value, expected, site)
                ):
                    later = (*later, pname)
            if plain:  # no upstream value among the arguments (the common case)
                nodes[ename] = Node(ename, step, "step", arguments, (), out_type, site[0], site[1])
                elems.append(new_ref(ename, out_type, self))
            else:
                elems.append(self._record(step, ename, arguments, site, later))
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


class Traced(NamedTuple):
    """What one run of a pipeline body recorded."""

    nodes: dict[str, Node]
    #: what the body returned (plain values and ``Ref``\\ s)
    output: Any
    #: ``mk.publish`` calls, in order, and the named artifact versions read (node -> version)
    publishes: list[Any]
    consumes: dict[str, Any]


def trace(name: str, fn: Callable[..., Any], params: dict[str, Any]) -> Traced:
    """Run ``fn(**params)`` once under a new tracer and return what it recorded.

    The nodes whose values make up the output, or that are published, are marked ``persist``.

    Raises
    ------
    PlanningError
        Another pipeline is being planned in this context, or the body returned a step
        itself instead of calling it.
    HashingError
        The output holds itself.
    """
    refuse_nested_plan(name)
    tracer = Tracer()
    token = TRACER.set(tracer)
    try:
        with set_aside():  # the existing heap is left out of the GC passes of planning
            output = fn(**params)
    finally:
        TRACER.reset(token)
    publishes, consumes = tracer.publishes, tracer.consumes
    nodes = tracer.close()
    _check_output(name, output)
    for node in dict.fromkeys(r.node for r in find_refs(output)):
        nodes[node].persist = True
    for published in publishes:  # a published value is stored like an output
        for ref in find_refs(published.value):
            nodes[ref.node].persist = True
    return Traced(nodes, output, publishes, consumes)


def refuse_nested_plan(name: str) -> None:
    """Raise ``PlanningError`` when a pipeline is being planned in this context already."""
    if TRACER.get() is not None:
        raise PlanningError(
            f"Pipeline {name!r}: .plan() was called while another pipeline is being "
            f"planned. Call the pipeline itself ({name}(...)) to nest it."
        )


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
