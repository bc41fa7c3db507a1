"""The walk asks the store once for the calls that are ready together (a fan-out's elements).

A store that counts what it is asked stands for the real one: a 200-wide fan-out makes one
bulk lookup, not 200, with the same statuses and values as before (hits on a re-run, misses
executed); the only per-key reads left are the single-flight claims of the calls that execute.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store

#: the folder where each execution of a step call leaves a mark (not part of the steps' code
#: identity, as a mutable global they read would be)
COUNTERS_ENV = "MLFLOWKIT_TEST_SCHEDULER_COUNTERS"


def _mark(i: int) -> None:
    with open(os.path.join(os.environ[COUNTERS_ENV], str(i)), "a") as f:
        f.write("x")


@mk.step
def square(i: int) -> int:
    _mark(i)
    return i * i


@mk.step
def slow_square(i: int) -> int:
    _mark(i)
    time.sleep(0.002)
    return i * i


@mk.step
def total(xs: list[int]) -> int:
    return sum(xs)


@mk.pipeline
def fan(n: int, start: int = 0) -> int:
    return total(square.map(i=list(range(start, start + n))))


@mk.pipeline
def slow_fan(n: int) -> int:
    return total(slow_square.map(i=list(range(n))))


@mk.step
def numbers(n: int) -> list[int]:
    return list(range(n))


@mk.pipeline
def fan_over(n: int) -> int:
    """A fan-out expanded while the run goes (its list is a step's output)."""
    return total(square.map(i=numbers(n)))


@mk.step
def one(x: object) -> int:
    return 1


@mk.pipeline
def count_of(items: list[object]) -> int:
    return total(one.map(x=items))


@mk.pipeline
def fan_of(items: list[Any]) -> int:
    return total(square.map(i=items))


class Counting(Store):
    """A store that notes its bulk lookups, and its single lookups made outside a lock."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bulk: list[list[str]] = []
        self.loose: list[str] = []  # ``get_cache`` not under the key's single-flight lock
        self._held = threading.local()

    def get_cache_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        asked = list(keys)
        self.bulk.append(asked)
        return super().get_cache_many(asked)

    def get_cache(self, key: str) -> CacheEntry | None:
        if not getattr(self._held, "depth", 0):
            self.loose.append(key)
        return super().get_cache(key)

    def lock(self, key: str, timeout: float = 300.0) -> AbstractContextManager[bool]:
        return self._counted(super().lock(key, timeout))

    @contextmanager
    def _counted(self, lock: AbstractContextManager[bool]) -> Iterator[bool]:
        with lock as acquired:
            self._held.depth = getattr(self._held, "depth", 0) + 1
            try:
                yield acquired
            finally:
                self._held.depth -= 1


def _elements(run: mk.Run) -> dict[str, Any]:
    return {s.name: s for s in run.steps if s.name.startswith("square[")}


@pytest.fixture(autouse=True)
def counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "counters"
    folder.mkdir()
    monkeypatch.setenv(COUNTERS_ENV, str(folder))
    return folder


def _ran(folder: Path) -> dict[int, int]:
    """How many times each call executed, by its input."""
    return {int(p.name): len(p.read_bytes()) for p in folder.iterdir()}


@pytest.mark.parametrize("executor", ["local", "threads"])
def test_a_fan_out_is_looked_up_in_one_query(tmp_path: Path, counters: Path, executor: str) -> None:
    url = str(tmp_path / "store")
    store = Counting(url)
    first = fan.plan(n=200).run(store=store, executor=executor, progress=False)
    assert first.output == sum(i * i for i in range(200))
    elements = _elements(first)
    keys = {s.key for s in elements.values()}
    assert len(elements) == 200 and {s.status for s in elements.values()} == {"executed"}
    assert [set(b) for b in store.bulk] == [keys]  # one bulk lookup: all misses
    assert not keys & set(store.loose)  # no single lookup of an element but its claim
    assert _ran(counters) == dict.fromkeys(range(200), 1)

    # a re-run: the pack answers, the store is asked nothing
    packed = Counting(url)
    again = fan.plan(n=200).run(store=packed, executor=executor, progress=False)
    assert {s.status for s in _elements(again).values()} == {"cached"}
    assert packed.bulk == [] and not keys & set(packed.loose)

    # without the pack: all hits, again in one query
    store.drop_packs()
    unpacked = Counting(url)
    again = fan.plan(n=200).run(store=unpacked, executor=executor, progress=False)
    assert again.output == first.output
    assert {s.status for s in _elements(again).values()} == {"cached"}
    assert [set(b) for b in unpacked.bulk] == [keys]
    assert not keys & set(unpacked.loose)
    assert _ran(counters) == dict.fromkeys(range(200), 1)  # nothing executed again

    # 200 known, 100 new (another plan size: no pack): hits and misses in one query
    grown_store = Counting(url)
    grown = fan.plan(n=300).run(store=grown_store, executor=executor, progress=False)
    got = {int(s.name[7:-1]): s.status for s in _elements(grown).values()}
    assert got == {i: "cached" if i < 200 else "executed" for i in range(300)}
    assert grown.output == sum(i * i for i in range(300))
    assert [set(b) for b in grown_store.bulk] == [{s.key for s in _elements(grown).values()}]
    assert _ran(counters) == dict.fromkeys(range(300), 1)


def test_a_fan_out_over_a_step_s_output_is_looked_up_in_one_query(
    tmp_path: Path, counters: Path
) -> None:
    url = str(tmp_path / "store")
    store = Counting(url)
    first = fan_over.plan(n=150).run(store=store, executor="threads", progress=False)
    assert first.output == sum(i * i for i in range(150))
    keys = {s.key for s in _elements(first).values()}
    assert len(keys) == 150
    assert [set(b) & keys for b in store.bulk if set(b) & keys] == [keys]
    assert not keys & set(store.loose)
    store.drop_packs()
    again = Counting(url)
    rerun = fan_over.plan(n=150).run(store=again, executor="threads", progress=False)
    assert {s.status for s in _elements(rerun).values()} == {"cached"}
    assert [set(b) & keys for b in again.bulk if set(b) & keys] == [keys]
    assert _ran(counters) == dict.fromkeys(range(150), 1)


def test_duplicate_calls_of_a_fan_out_execute_once(tmp_path: Path, counters: Path) -> None:
    store = Counting(str(tmp_path / "store"))
    items = [1, 2, 1, 3, 2, 1]
    run = fan_of.plan(items=items).run(store=store, executor="threads", progress=False)
    assert run.output == sum(i * i for i in items)
    assert _ran(counters) == {1: 1, 2: 1, 3: 1}
    statuses = sorted(s.status for s in _elements(run).values())
    assert statuses == ["cached"] * 3 + ["executed"] * 3
    assert len(store.bulk) == 1 and len(store.bulk[0]) == 3  # each key asked once


def test_an_unhashable_element_fails_that_call_as_before(tmp_path: Path, counters: Path) -> None:
    class Opaque:
        pass

    plan = count_of.plan(items=[1, Opaque(), 3])
    store = Counting(str(tmp_path / "store"))
    with pytest.raises(mk.RunFailed) as failed:
        plan.run(store=store, executor="local", progress=False)
    error = failed.value.__cause__
    assert isinstance(error, mk.HashingError)
    assert "Step 'one[1]', parameter 'x'" in str(error) and "Opaque" in str(error)
    run = failed.value.run
    assert run.step("one[1]").status == "failed"
    assert "HashingError" in (run.step("one[1]").error or "")
    with pytest.raises(mk.HashingError, match=r"Step 'one\[1\]', parameter 'x'"):
        plan.explain(store)


def test_explain_reads_a_fan_out_in_one_query(tmp_path: Path, counters: Path) -> None:
    url = str(tmp_path / "store")
    fan.plan(n=50).run(store=url, executor="local", progress=False)
    store = Counting(url)
    store.drop_packs()
    report = fan.plan(n=60).explain(store)
    actions = {e["step"]: e["action"] for e in report}
    assert [actions[f"square[{i}]"] for i in range(60)] == ["hit"] * 50 + ["execute"] * 10
    assert len(store.bulk) == 1 and not set(store.bulk[0]) & set(store.loose)


def test_a_forced_run_looks_nothing_up(tmp_path: Path, counters: Path) -> None:
    url = str(tmp_path / "store")
    fan.plan(n=20).run(store=url, executor="local", progress=False)
    store = Counting(url)
    run = fan.plan(n=20).run(store=store, executor="local", progress=False, force=True)
    assert {s.status for s in _elements(run).values()} == {"executed"}
    assert store.bulk == []


def test_two_runs_of_one_fan_out_at_once_execute_each_call_once(
    tmp_path: Path, counters: Path
) -> None:
    url = str(tmp_path / "store")
    start = threading.Barrier(2)
    runs: list[mk.Run] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            plan = slow_fan.plan(n=120)
            start.wait(30)
            runs.append(plan.run(store=Store(url), executor="threads", progress=False))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(runs) == 2
    assert _ran(counters) == dict.fromkeys(range(120), 1)  # single flight across the two runs
    assert {r.output for r in runs} == {sum(i * i for i in range(120))}
    for i in range(120):
        name = f"slow_square[{i}]"
        assert sorted(r.step(name).status for r in runs) == ["cached", "executed"], name
