from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlflowkit as mk
from mlflowkit.placeholders import leaves, map_leaves


class Leaf:
    def __init__(self, n: int) -> None:
        self.n = n


class Point(NamedTuple):
    x: Any
    y: Any


def _templates() -> st.SearchStrategy[Any]:
    base = st.one_of(st.integers(), st.text(max_size=3), st.builds(Leaf, st.integers(0, 9)))
    return st.recursive(
        base,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=2), inner, max_size=3),
            st.tuples(inner, inner).map(lambda t: Point(*t)),
        ),
        max_leaves=8,
    )


class Marker:
    def __init__(self, n: int) -> None:
        self.n = n


@given(_templates())
def test_map_replaces_exactly_the_leaves_found(template: Any) -> None:
    found = leaves(template, Leaf)
    mapped = map_leaves(template, Leaf, lambda leaf: Marker(leaf.n))
    assert leaves(mapped, Leaf) == []
    assert [m.n for m in leaves(mapped, Marker)] == [leaf.n for leaf in found]


def test_named_tuples_sets_and_copies() -> None:
    a, b = Leaf(1), Leaf(2)
    template = {"p": Point(a, [b, 3]), "s": frozenset({4}), "l": [5]}
    assert leaves(template, Leaf) == [a, b]
    mapped = map_leaves(template, Leaf, lambda leaf: leaf.n * 10)
    assert mapped == {"p": Point(10, [20, 3]), "s": frozenset({4}), "l": [5]}
    assert type(mapped["p"]) is Point
    assert mapped["l"] is not template["l"]  # mutable containers are copied
    assert mapped["s"] is template["s"]  # immutable ones without leaves are kept


def test_deep_templates_are_walked_without_recursion_limits() -> None:
    deep: Any = Leaf(0)
    for _ in range(5000):
        deep = [deep]
    assert len(leaves(deep, Leaf)) == 1


def test_all_of_type_checks_exact_types() -> None:
    from mlflowkit.placeholders import all_of_type

    class Sub(int):
        pass

    assert all_of_type((), int) and all_of_type([], str)
    assert all_of_type((1, 2, 3), int)
    assert not all_of_type((1, 2, "3"), int)
    assert not all_of_type(("1", 2), int)
    assert not all_of_type((1, Sub(2)), int)  # exact types only, as the fast paths need
    assert not all_of_type((True, 1), int)


@pytest.mark.timeout(10)
def test_a_container_that_holds_itself_is_refused_at_once() -> None:
    looped: list[Any] = [1, Leaf(1)]
    looped.append(looped)
    mapping: dict[str, Any] = {"a": Leaf(2)}
    mapping["self"] = [mapping]
    for template, name in ((looped, "list"), ({"x": (mapping,)}, "dict")):
        with pytest.raises(mk.HashingError, match=rf"found a {name} that contains itself"):
            leaves(template, Leaf)
    shared = [Leaf(3)]
    assert len(leaves([shared, shared, (shared,)], Leaf)) == 3  # shared, not a cycle


@given(_templates())
def test_the_deep_walk_gives_what_the_recursive_one_gives(template: Any) -> None:
    from mlflowkit.placeholders import _map_deep

    def mark(leaf: Leaf) -> int:
        return leaf.n * 10

    assert _map_deep(template, Leaf, mark) == map_leaves(template, Leaf, mark)
    assert _map_deep([[], (), {}, [[]]], Leaf, mark) == [[], (), {}, [[]]]


def test_map_leaves_takes_any_depth() -> None:
    deep: Any = [Leaf(7), {"k": (Point(Leaf(8), []),)}]
    for _ in range(100_000):
        deep = [deep, ()]
    mapped = map_leaves(deep, Leaf, lambda leaf: leaf.n)
    for _ in range(100_000):
        assert mapped[1] == ()
        mapped = mapped[0]
    assert mapped == [7, {"k": (Point(8, []),)}]
