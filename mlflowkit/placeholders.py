"""Argument templates: plain values with placeholders (``Ref``, ``Input``) nested inside.

A step call's arguments may hold upstream values anywhere inside lists, tuples (named tuples
too), sets and dicts. Planning records them as ``Ref``\\ s, the scheduler turns them into
``Input``\\ s, and the place a task runs turns those into values. Every one of these passes
walks templates the same way, through the two functions here.

Invariants
----------
* ``leaves`` visits exactly the placeholders that ``map_leaves`` replaces, so the
  dependencies recorded for a call are always the values it receives.
* ``leaves`` ends on every input: a container that holds itself (a reference cycle) raises
  ``HashingError`` at once. Planning walks every argument with it first, so ``map_leaves``
  only ever sees trees.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from mlflowkit.errors import HashingError

__all__ = ["SCALARS", "all_of_type", "leaves", "map_leaves"]

_SEQUENCES = (list, set, frozenset)

#: Types that never hold a placeholder: the fast paths over templates skip them by exact type.
SCALARS = frozenset({int, float, str, bool, bytes, type(None)})


def all_of_type(items: tuple[Any, ...] | list[Any], kind: type) -> bool:
    """Whether every item's type is exactly ``kind`` (True when empty).

    Done in C (``map``, ``set``): a generator expression costs ~50 ns an item, and a gather's
    tuple has thousands.
    """
    return not items or (type(items[0]) is kind and set(map(type, items)) == {kind})


def map_leaves(template: Any, leaf: type | tuple[type, ...], fn: Callable[[Any], Any]) -> Any:
    """A copy of ``template`` with every instance of ``leaf`` replaced by ``fn(instance)``.

    Mutable containers (lists, sets, dicts) are always copied, so a step that mutates its
    argument never changes the plan; immutable ones without a placeholder are kept as they are.
    Nesting of any depth is fine: past ``_DEEP`` levels the walk goes on without recursion.
    """
    if isinstance(template, leaf):
        return fn(template)
    return _map(template, leaf, fn, 0)


#: How deep ``map_leaves`` recurses before it goes on with an explicit stack (``_map_deep``).
_DEEP = 100


def _map(template: Any, leaf: type | tuple[type, ...], fn: Callable[[Any], Any], depth: int) -> Any:
    kind = type(template)
    if kind in _SEQUENCES or kind is tuple:
        if depth >= _DEEP:
            return _map_deep(template, leaf, fn)
        # placeholders are tested here, not in a call per item: a gather holds thousands
        depth += 1
        items = [fn(t) if isinstance(t, leaf) else _map(t, leaf, fn, depth) for t in template]
        return _rebuild(template, kind, items)
    if kind is dict:
        if depth >= _DEEP:
            return _map_deep(template, leaf, fn)
        depth += 1
        return {
            k: fn(v) if isinstance(v, leaf) else _map(v, leaf, fn, depth)
            for k, v in template.items()
        }
    if isinstance(template, tuple) and hasattr(kind, "_make"):  # named tuples
        if depth >= _DEEP:
            return _map_deep(template, leaf, fn)
        depth += 1
        return kind._make(
            fn(t) if isinstance(t, leaf) else _map(t, leaf, fn, depth) for t in template
        )
    return template


def _rebuild(template: Any, kind: type, items: list[Any]) -> Any:
    """``template``'s container type holding ``items`` (``template`` itself when it is
    immutable and no item changed)."""
    if kind is dict:
        return dict(zip(template, items, strict=True))
    if kind in _SEQUENCES or kind is tuple:
        # (compared in C: ``map`` stops with the shorter, and both have one item per item)
        if kind in (tuple, frozenset) and not any(map(operator.is_not, items, template)):
            return template
        return kind(items)
    return kind._make(items)  # type: ignore[attr-defined]  # a named tuple


def _map_deep(template: Any, leaf: type | tuple[type, ...], fn: Callable[[Any], Any]) -> Any:
    """``map_leaves`` with an explicit stack: the same result, at any depth of nesting."""
    done: list[Any] = []  # finished values, in walk order
    stack: list[Any] = [template]
    while stack:
        item = stack.pop()
        if type(item) is _Build:  # all of a container's items are done: rebuild it
            n = len(item.obj)
            items: list[Any] = []
            if n:
                items = done[-n:]
                del done[-n:]
            done.append(_rebuild(item.obj, type(item.obj), items))
            continue
        if isinstance(item, leaf):
            done.append(fn(item))
            continue
        kind = type(item)
        if (
            kind in _SEQUENCES
            or kind is tuple
            or kind is dict
            or (isinstance(item, tuple) and hasattr(kind, "_make"))
        ):
            stack.append(_Build(item))
            stack.extend(reversed(list(item.values() if kind is dict else item)))
        else:
            done.append(item)
    return done[0]


class _Build:
    """A mark on ``_map_deep``'s stack: rebuild ``obj`` from the last ``len(obj)`` values."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


class _Left:
    """A mark on the walk's stack: the walk has left the container ``obj``."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def leaves(template: Any, leaf: type | tuple[type, ...]) -> list[Any]:
    """Every instance of ``leaf`` inside ``template``, in order (without recursion limits).

    Raises
    ------
    HashingError
        When a list, set, tuple or dict inside ``template`` contains itself.
    """
    found: list[Any] = []
    stack = [template]
    inside: set[int] = set()  # the containers being walked: the path from the top
    while stack:
        item = stack.pop()
        if isinstance(item, leaf):
            found.append(item)
            continue
        kind = type(item)
        if kind is _Left:
            inside.discard(id(item.obj))
            continue
        if (
            kind in _SEQUENCES
            or kind is tuple
            or (isinstance(item, tuple) and hasattr(kind, "_make"))
        ):
            for t in item:  # a plain loop: a gather's tuple holds thousands of placeholders
                if not isinstance(t, leaf):
                    # plain scalars hold no placeholder: not worth a trip through the stack
                    inner = [t for t in item if isinstance(t, leaf) or type(t) not in SCALARS]
                    if inner:
                        _enter(inside, item, stack)
                        stack.extend(reversed(inner))
                    break
            else:
                found.extend(item)  # a flat sequence of placeholders: no stack work
        elif kind is dict and item:  # (a dict's keys are hashable: no placeholder, no cycle)
            _enter(inside, item, stack)
            stack.extend(reversed(list(item.values())))
    return found


def _enter(inside: set[int], container: Any, stack: list[Any]) -> None:
    key = id(container)
    if key in inside:
        kind = type(container)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else kind.__module__ + "." + kind.__qualname__
        )
        raise HashingError(
            f"expected a finite tree of lists, tuples, sets and dicts, found a {name} that "
            f"contains itself (a reference cycle): its content, and so its digest, has no end, "
            f"so it cannot be a pipeline parameter, a step argument or a pipeline's output. "
            f"Break the cycle, or pass a value of a type with a registered hasher "
            f"(mk.register_hasher) that says what defines it.",
            type_name=name,
        )
    inside.add(key)
    stack.append(_Left(container))
