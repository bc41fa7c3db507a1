"""A step cannot change a value under the steps that share it, on any executor.

Before, ``bump(x): x += 1`` on ``local`` or ``threads`` changed the array its upstream produced,
so ``total(a)`` on the same array saw the change and its (wrong) result was cached under the key
of the original; ``processes`` gave the right answer. Now every executor gives the same one:
NumPy arrays arrive as read-only views (writing into one fails the step with
``InputMutationError``), lists, dicts and pandas frames as copies of the step's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlflowkit as mk
from mlflowkit.executors.base import Executor

EXECUTORS = ["local", "threads", "processes", pytest.param("dask", marks=pytest.mark.dask)]


@mk.step
def zeros(n: int) -> np.ndarray:
    return np.zeros(n)


@mk.step
def bump(x: np.ndarray) -> np.ndarray:
    x += 1
    return x


@mk.step
def total(a: np.ndarray) -> float:
    return float(a.sum())


@mk.step
def bump_a_copy(x: np.ndarray) -> np.ndarray:
    x = x.copy()  # what the error says to do
    x += 1
    return x


@mk.step
def same(x: np.ndarray) -> np.ndarray:
    return x


@mk.step
def data(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(float(n)), np.ones(n)


@mk.step
def center(xy: tuple[np.ndarray, np.ndarray]) -> float:
    x, _ = xy
    x -= x.mean()
    return float(x.sum())


@mk.step
def numbers(n: int) -> list[int]:
    return list(range(n))


@mk.step
def append_to(xs: list[int]) -> int:
    xs.append(99)
    xs.sort(reverse=True)
    return len(xs)


@mk.step
def first(xs: list[int]) -> int:
    return xs[0]


@mk.step
def table(n: int) -> dict[str, list[int]]:
    return {"a": list(range(n))}


@mk.step
def add_key(d: dict[str, list[int]]) -> int:
    d["b"] = [1]
    d["a"].append(7)
    return len(d)


@mk.step
def keys(d: dict[str, list[int]]) -> list[str]:
    return sorted(d)


@mk.step
def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"a": range(n), "b": [0.5] * n})


@mk.step
def widen(df: pd.DataFrame) -> int:
    df["c"] = 1
    df.iloc[0, 0] = 100
    return len(df.columns)


@mk.step
def columns(df: pd.DataFrame) -> list[str]:
    return list(df.columns)


@mk.step
def column_a(df: pd.DataFrame) -> list[int]:
    return [int(v) for v in df["a"]]


@mk.pipeline
def frame_columns(n: int = 3) -> Any:
    df = frame(n)
    return widen(df), columns(df), column_a(df)


@mk.pipeline
def poisoned(n: int = 3) -> Any:
    a = zeros(n)
    return bump(a), total(a)


@mk.pipeline
def only_total(n: int = 3) -> float:
    return total(zeros(n))


@mk.pipeline
def copied_first(n: int = 3) -> Any:
    a = zeros(n)
    return bump_a_copy(a), total(a), same(a)


@mk.pipeline
def centered(n: int = 3) -> Any:
    return center(data(n))


@mk.pipeline
def containers(n: int = 3) -> Any:
    xs, d = numbers(n), table(n)
    return append_to(xs), first(xs), xs, add_key(d), keys(d), d


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    if request.param == "dask":
        ex = mk.executors.get("dask", address=request.getfixturevalue("dask_address"))
    else:
        ex = mk.executors.get(request.param, max_workers=2)
    try:
        yield ex
    finally:
        ex.shutdown()


@pytest.mark.timeout(60)
def test_a_step_writing_into_its_input_array_fails_naming_it(
    executor: Executor, store: Any
) -> None:
    with pytest.raises(mk.RunFailed) as info:
        poisoned.plan().run(executor=executor, store=store, progress=False)
    cause = info.value.__cause__
    assert isinstance(cause, mk.InputMutationError) and isinstance(cause, mk.MlflowkitError)
    assert cause.step == "bump" and cause.parameters == ("x",)
    assert "x = x.copy()" in str(cause) and "read-only" in str(cause)
    assert info.value.step == "bump"
    assert info.value.run.step("bump").attempts == 1
    # nothing was cached from a changed array: the sum of the zeros is 0, run after run
    assert only_total.plan().run(executor=executor, store=store, progress=False).output == 0.0
    assert only_total.plan().run(executor="local", store=store, progress=False).output == 0.0


@pytest.mark.timeout(60)
def test_a_step_that_copies_first_works_and_returned_inputs_stay_writable(
    executor: Executor, store: Any
) -> None:
    run = copied_first.plan().run(executor=executor, store=store, progress=False)
    bumped, summed, returned = run.output
    assert bumped.tolist() == [1.0, 1.0, 1.0] and summed == 0.0
    assert returned.tolist() == [0.0, 0.0, 0.0]
    assert returned.flags.writeable  # the array itself, not the view the step received


@pytest.mark.timeout(60)
def test_arrays_inside_a_tuple_are_read_only_too(executor: Executor, store: Any) -> None:
    with pytest.raises(mk.RunFailed) as info:
        centered.plan().run(executor=executor, store=store, progress=False)
    assert isinstance(info.value.__cause__, mk.InputMutationError)
    assert info.value.__cause__.parameters == ("xy",)


@pytest.mark.timeout(60)
def test_lists_and_dicts_are_the_steps_own_copies(executor: Executor, store: Any) -> None:
    run = containers.plan().run(executor=executor, store=store, progress=False)
    assert run.output == (4, 0, [0, 1, 2], 2, ["a"], {"a": [0, 1, 2]})


@pytest.mark.timeout(60)
def test_pandas_frames_are_the_steps_own_copies(executor: Executor, store: Any) -> None:
    run = frame_columns.plan().run(executor=executor, store=store, progress=False)
    assert run.output == (3, ["a", "b"], [0, 1, 2])


def test_plain_scalar_arguments_are_passed_without_a_copy() -> None:
    """The trivial-task hot path: a call whose arguments are all plain scalars is not touched."""
    from mlflowkit.stepcall import guard_arguments

    arguments = {"i": 1, "s": "x"}
    assert guard_arguments(total, arguments) == [] and arguments == {"i": 1, "s": "x"}
    array = np.zeros(2)
    arguments = {"a": array, "i": 1}
    (view,) = guard_arguments(total, arguments)
    assert view == ("a", arguments["a"], array) and not arguments["a"].flags.writeable
    assert array.flags.writeable


def test_an_array_at_the_bottom_of_a_very_deep_list_is_read_only_too() -> None:
    # Past the recursion limit, the guard goes on without recursion.
    from mlflowkit.stepcall import guard_arguments

    array = np.zeros(3)
    deep: Any = [array]
    for _ in range(5000):
        deep = [deep]
    arguments = {"x": deep}
    views = guard_arguments(total, arguments)
    inner = arguments["x"]
    for _ in range(5000):
        assert isinstance(inner, list)
        inner = inner[0]
    assert arguments["x"] is not deep  # the containers are the step's own
    assert not inner[0].flags.writeable and inner[0].base is array
    assert array.flags.writeable
    assert [name for name, _, _ in views] == ["x"]
