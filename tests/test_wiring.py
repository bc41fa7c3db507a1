from __future__ import annotations

import collections.abc as cabc
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, Optional, TypedDict, TypeVar, Union

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

import mlflowkit as mk
from mlflowkit.wiring import check_value, compatible
from tests.resources import dag_basic

BASE = [int, float, complex, bool, str, bytes, type(None), list, dict, tuple, np.ndarray]


def _hints(depth: int = 2) -> st.SearchStrategy[Any]:
    leaves = st.sampled_from([int, float, bool, str, bytes, type(None), Any])
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            inner.map(lambda t: list[t]),  # type: ignore[valid-type]
            st.tuples(inner, inner).map(lambda ab: dict[ab[0], ab[1]]),  # type: ignore[misc]
            st.tuples(inner, inner).map(lambda ab: Union[ab[0], ab[1]]),  # noqa: UP007
            inner.map(lambda t: Optional[t]),  # noqa: UP045
            inner.map(lambda t: Annotated[t, "meta"]),
            st.lists(inner, min_size=1, max_size=3).map(
                lambda ts: tuple.__class_getitem__(tuple(ts))
            ),
        ),
        max_leaves=5,
    )


@given(_hints())
def test_compatibility_is_reflexive(hint: Any) -> None:
    assert compatible(hint, hint)


@given(_hints())
def test_any_is_compatible_both_ways(hint: Any) -> None:
    assert compatible(hint, Any) and compatible(Any, hint)


@given(_hints(), _hints())
def test_a_union_accepts_each_member(a: Any, b: Any) -> None:
    assert compatible(a, Union[a, b])  # noqa: UP007
    assert compatible(b, a | b if hasattr(a, "__or__") and hasattr(b, "__or__") else Union[a, b])  # noqa: UP007


@given(_hints(), _hints())
def test_a_union_fits_only_where_every_member_fits(a: Any, b: Any) -> None:
    assert compatible(Union[a, b], Union[a, b])  # noqa: UP007
    if not compatible(b, a):
        assert not compatible(Union[a, b], a)  # noqa: UP007


@given(_hints())
def test_annotated_is_transparent(hint: Any) -> None:
    assert compatible(Annotated[hint, "x"], hint) and compatible(hint, Annotated[hint, "x"])


@given(st.sampled_from(BASE), st.sampled_from(BASE))
def test_class_compatibility_follows_subclassing_and_the_numeric_tower(a: type, b: type) -> None:
    expected = issubclass(a, b) or (b is float and a is int) or (b is complex and a in (int, float))
    assert compatible(a, b) == expected


@given(st.sampled_from([int, float, str]), st.sampled_from([int, float, str]))
def test_generic_containers_compare_their_parameters(a: type, b: type) -> None:
    assert compatible(list[a], list[b]) == compatible(a, b)  # type: ignore[valid-type]
    assert compatible(dict[str, a], dict[str, b]) == compatible(a, b)  # type: ignore[valid-type]


def test_specific_rules() -> None:
    T = TypeVar("T", bound=float)
    assert compatible(int, T) and not compatible(str, T)
    assert compatible(Optional[int], Optional[float])  # noqa: UP045
    assert not compatible(Optional[int], int)  # noqa: UP045
    assert compatible(int | None, Optional[int])  # noqa: UP045
    assert compatible(NDArray[np.float64], NDArray[np.floating[Any]])
    assert not compatible(NDArray[np.int64], NDArray[np.float64])
    assert compatible(NDArray[np.float64], np.ndarray)
    assert compatible(tuple[int, int], tuple[int, ...])
    assert not compatible(tuple[int, str], tuple[int, ...])
    assert compatible(list[int], cabc.Sequence[int])
    assert compatible(Literal[1, 2], int) and compatible(Literal["a"], Literal["a", "b"])
    assert not compatible(int, Literal[1])
    assert compatible(type(dag_basic.inc.fn), cabc.Callable)


def test_value_checks_use_the_numeric_tower() -> None:
    assert check_value(1, float) and not check_value("1", float)
    assert check_value([1, 2], list[int]) and not check_value(["a"], list[int])
    assert check_value(np.zeros(2), NDArray[np.float64])
    assert not check_value(np.zeros(2, dtype=np.int32), NDArray[np.float64])


def test_wiring_errors_name_step_parameter_types_and_line_before_anything_runs() -> None:
    ran: list[str] = []

    @mk.step
    def produce() -> str:
        ran.append("produce")
        return "x"

    @mk.step
    def consume(x: int) -> int:
        ran.append("consume")
        return x

    @mk.pipeline
    def p() -> Any:
        return consume(produce())

    with pytest.raises(mk.WiringError) as info:
        p()
    err = info.value
    assert ran == []
    assert err.step == "consume" and err.parameter == "x"
    assert err.expected is int and err.actual is str
    assert err.location is not None and "test_wiring.py" in err.location
    assert "expected int, found str" in str(err)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: dag_basic.inc(), "missing"),
        (lambda: dag_basic.inc(1, 2), "too many"),
        (lambda: dag_basic.inc(1, y=2), "unexpected keyword"),
        (lambda: dag_basic.inc(1, x=2), "multiple values"),
        (lambda: dag_basic.inc("one"), "expected int, found str"),
    ],
)
def test_unknown_missing_duplicate_and_mistyped_arguments(call: Any, needle: str) -> None:
    @mk.pipeline
    def p() -> Any:
        return call()

    with pytest.raises(mk.WiringError, match=needle):
        p.plan()


def test_return_values_are_checked_at_run_time(tmp_path: Any) -> None:
    @mk.step
    def liar() -> int:
        return "not an int"  # type: ignore[return-value]

    @mk.pipeline
    def p() -> Any:
        return liar()

    with pytest.raises(mk.RunFailed) as info:
        p.plan().run(store=str(tmp_path))
    assert isinstance(info.value.__cause__, mk.TypeCheckError)
    assert info.value.run.step("liar").status == "failed"


def test_numpy_scalars_are_accepted_where_they_convert_without_loss(tmp_path: Any) -> None:
    """``-> int`` returning ``numpy.int64`` (``arr.sum()`` of an int array) failed the return
    check. NumPy scalars that convert to the annotated number type without loss pass, kept
    as they are; others still fail."""
    import numpy as np

    @mk.step
    def count(n: int) -> int:
        return np.arange(n).sum()  # type: ignore[no-any-return]

    @mk.step
    def mean(n: int) -> float:
        return np.float32(n) / 2  # type: ignore[no-any-return]

    @mk.step
    def positive(x: int) -> bool:
        return np.int64(x) > 0  # type: ignore[no-any-return]

    @mk.step
    def truncated(n: int) -> int:
        return np.float64(n)  # type: ignore[return-value]

    @mk.pipeline
    def p(n: int = 4) -> Any:
        total = count(n)
        return total, mean(total), positive(total)

    run = p.plan().run(store=str(tmp_path), progress=False)
    assert run.output == (6, 3.0, True)
    assert type(run.output[0]) is np.int64  # accepted, not converted: its digest is its own
    assert check_value(np.uint64(2**64 - 1), int) and check_value(np.complex64(1j), complex)
    assert check_value([np.int8(1), 2], list[int]) and check_value(np.int16(1), float | None)
    assert not check_value(np.longdouble(1), float)  # more precise than a Python float
    assert not check_value(np.float64(1.0), int) and not check_value(np.int64(1), bool)

    @mk.pipeline
    def q(n: int = 4) -> Any:
        return truncated(n)

    with pytest.raises(mk.RunFailed) as info:
        q.plan().run(store=str(tmp_path), progress=False)
    assert isinstance(info.value.__cause__, mk.TypeCheckError)


def test_every_element_of_a_returned_container_is_checked() -> None:
    bad_last = [*range(50), "fifty"]
    assert all(not check_value(bad_last, list[int]) for _ in range(20))  # never by chance
    assert not check_value({"a": 1.0, "b": "x"}, dict[str, float])
    assert not check_value((1, "a"), tuple[int, ...])
    assert check_value({"a": 1, "b": 2.5}, dict[str, float])
    assert check_value([[1, 2], [3]], list[list[int]])
    assert not check_value([[1, 2], ["3"]], list[list[int]])


def test_a_wrong_return_value_says_which_element_and_the_dtype(tmp_path: Any) -> None:
    @mk.step
    def names() -> list[int]:
        return [1, 2, "three"]  # type: ignore[list-item]

    @mk.step
    def floats() -> NDArray[np.float64]:
        return np.arange(3)

    for step, needle in (
        (names, "item [2] is str 'three', expected int"),
        (floats, "dtype int64"),
    ):

        @mk.pipeline
        def p(s: Any = step) -> Any:
            return s()

        with pytest.raises(mk.RunFailed) as info:
            p.plan().run(store=str(tmp_path), progress=False)
        assert needle in str(info.value.__cause__)


# --- derived values (ref.attr, ref[i], ref["k"]) are typed, or checked before their consumer runs


@dataclass
class Fitted:
    weights: np.ndarray
    n_iter: int


class Report(TypedDict):
    accuracy: float
    labels: list[str]


class Split(NamedTuple):
    X: np.ndarray
    n: int


@mk.step
def _arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.ones((n, 2)), np.ones(n)


@mk.step
def _untyped_arrays(n: int):  # type: ignore[no-untyped-def]  # no return annotation on purpose
    return np.ones((n, 2)), np.ones(n)


@mk.step
def _fitted(n: int) -> Fitted:
    return Fitted(np.ones(n), 3)


@mk.step
def _report(n: int) -> Report:
    return {"accuracy": 0.5, "labels": ["a"] * n}


@mk.step
def _split(n: int) -> Split:
    return Split(np.ones(n), n)


_RAN: list[str] = []


@mk.step
def _score(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    _RAN.append("score")
    return float(np.sum(y))


@mk.step
def _count(n: int) -> int:
    return n


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (
            lambda X, y: _score(X, X, y.shape),
            "found tuple[int, ...] (the output of step '_arrays.1.shape",
        ),
        (lambda X, y: _score(X, X.dtype, y), "found numpy.dtype"),
        (lambda X, y: _score(X, X, y.mean), "'mean' is a method: call it inside a step"),
        (
            lambda X, y: _score(_fitted(2).n_iter, X, y),
            "found int (the output of step '_fitted.n_iter')",
        ),
        (lambda X, y: _score(X, X, _report(2)["labels"]), "found list[str]"),
        (lambda X, y: _score(X, X, _split(2)[1]), "found int"),
        (lambda X, y: _count(_split(2).X), "expected int, found numpy.ndarray"),
    ],
)
def test_attributes_and_items_are_typed_from_the_annotation_while_planning(
    body: Any, found: str
) -> None:
    @mk.pipeline
    def p(n: int) -> Any:
        X, y = _arrays(n)
        return body(X, y)

    with pytest.raises(mk.WiringError, match=r"expected|found") as info:
        p.plan(n=3)
    assert found in str(info.value)


def test_attributes_and_items_of_the_right_type_plan_and_run(tmp_path: Any) -> None:
    @mk.pipeline
    def p(n: int) -> Any:
        X, _ = _arrays(n)
        fitted = _fitted(n)
        return _score(fitted.weights, X.T, _split(n).X), _count(X.size), _report(n)["accuracy"]

    assert p.plan(n=3).run(store=str(tmp_path), progress=False).output == (3.0, 6, 0.5)


@pytest.mark.parametrize("executor", ["local", "threads"])
def test_a_derived_value_of_unknown_type_is_checked_before_its_consumer_runs(
    tmp_path: Any, executor: str
) -> None:
    @mk.pipeline
    def p(n: int) -> Any:
        data = _untyped_arrays(n)  # no return annotation: planning cannot type data[1].shape
        X, y = data[0], data[1]
        return _score(X, X, y.shape)

    _RAN.clear()
    with pytest.raises(mk.RunFailed) as info:
        p.plan(n=3).run(executor, store=str(tmp_path), progress=False)
    err = info.value.__cause__
    assert isinstance(err, mk.TypeCheckError) and err.step == "_score"
    assert "parameter 'y': expected numpy.ndarray, found tuple ((3,))" in str(err)
    assert "'_untyped_arrays.1.shape'" in str(err) and "the step did not run" in str(err)
    assert _RAN == []
    assert info.value.run.step("_score").status == "failed"

    @mk.pipeline
    def right(n: int) -> Any:
        data = _untyped_arrays(n)
        return _score(data[0], data[0], data[1])

    assert right.plan(n=3).run(executor, store=str(tmp_path), progress=False).output == 3.0
