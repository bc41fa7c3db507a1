"""The walk asks the store once for the calls that are ready together (a fan-out's elements).

A store that counts what it is asked stands for the real one: a 200-wide fan-out makes one
bulk lookup, not 200, with the same statuses and values as before (hits on a re-run, misses
executed). The misses' single-flight locks are taken together, and the misses looked up again
under them in a second bulk lookup, so no call claims its key alone (unless another run holds
one of the keys: then each call claims its own, as before).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit import scheduler
from mlflowkit.executors.base import Executor, Task, TaskResult
from mlflowkit.records import CacheEntry
from mlflowkit.stepcall import execute, local_resolver
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
    """A store that notes its bulk lookups, and its single lookups made outside a lock and
    under one (a call's own claim)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bulk: list[list[str]] = []
        self.loose: list[str] = []  # ``get_cache`` not under the key's single-flight lock
        self.claimed: list[str] = []  # ``get_cache`` under it
        self._held = threading.local()

    def get_cache_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        asked = list(keys)
        self.bulk.append(asked)
        return super().get_cache_many(asked)

    def get_cache(self, key: str) -> CacheEntry | None:
        (self.claimed if getattr(self._held, "depth", 0) else self.loose).append(key)
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
    # one bulk lookup: all misses; then again, under their locks, taken together
    assert [set(b) for b in store.bulk] == [keys, keys]
    assert not keys & set(store.loose + store.claimed)  # no single lookup of an element
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
    new_keys = {s.key for s in _elements(grown).values() if s.status == "executed"}
    assert [set(b) for b in grown_store.bulk] == [
        {s.key for s in _elements(grown).values()},
        new_keys,
    ]
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
    assert [set(b) & keys for b in store.bulk if set(b) & keys] == [keys, keys]
    assert not keys & set(store.loose + store.claimed)
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
    assert [len(b) for b in store.bulk] == [3, 3]  # each key asked once, then under its lock


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


class RecordedMeanwhile(Counting):
    """A store where ``entry`` is recorded (as by another run) between the first lookup of
    a fan-out and the look under its locks."""

    def __init__(self, url: str, entry: CacheEntry) -> None:
        super().__init__(url)
        self.entry = entry

    def get_cache_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        asked = list(keys)
        if len(self.bulk) == 1:  # the look under the locks: the entry came in between
            assert self.entry.key in asked
            other = Store(self.url)
            assert other.put(0) == self.entry.output_digest
            other.put_cache(self.entry)
        return super().get_cache_many(asked)


def test_a_call_recorded_by_another_run_while_the_locks_are_taken_is_a_hit(
    tmp_path: Path, counters: Path
) -> None:
    elsewhere = fan.plan(n=1).run(store=str(tmp_path / "elsewhere"), progress=False)
    made = elsewhere.step("square[0]")
    assert made.key is not None and made.output_digest is not None
    entry = CacheEntry(made.key, made.output_digest, made.step)
    (tmp_path / "counters" / "0").unlink()
    url = str(tmp_path / "store")
    store = RecordedMeanwhile(url, entry)
    run = fan.plan(n=30).run(store=store, executor="threads", progress=False)
    assert run.output == sum(i * i for i in range(30))
    assert run.step("square[0]").status == "cached"  # found under its lock: not executed again
    assert {run.step(f"square[{i}]").status for i in range(1, 30)} == {"executed"}
    assert _ran(counters) == dict.fromkeys(range(1, 30), 1)


def test_when_another_run_holds_one_key_each_call_claims_its_own(
    tmp_path: Path, counters: Path
) -> None:
    url = str(tmp_path / "store")
    fan.plan(n=1).run(store=url, executor="local", progress=False)  # square(0) is stored
    seen = Counting(url)
    plan = fan.plan(n=20, start=100)
    key = plan.explain(seen)[0]["key"]  # square(100): held by "another run" below
    other = Store(url)
    released = threading.Event()

    def hold() -> None:
        with other.lock(key, timeout=5) as got:
            assert got
            released.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    store = Counting(url)
    threading.Timer(0.3, released.set).start()  # the other run finishes without recording
    run = plan.run(store=store, executor="threads", progress=False)
    holder.join(10)
    assert run.output == sum(i * i for i in range(100, 120))
    assert {s.status for s in _elements(run).values()} == {"executed"}
    keys = {s.key for s in _elements(run).values()}
    assert len(store.bulk) == 1  # not all locks could be had: none is held for the calls
    assert keys <= set(store.claimed)  # each call claimed its own key (and waited for one)
    assert _ran(counters) == {0: 1, **dict.fromkeys(range(100, 120), 1)}


def test_locks_taken_for_a_failed_run_s_calls_are_released(tmp_path: Path, counters: Path) -> None:
    @mk.step
    def fragile(i: int) -> int:
        if i == 3:
            raise ValueError("no 3")
        return i

    @mk.pipeline
    def fragile_fan(n: int) -> int:
        return total(fragile.map(i=list(range(n))))

    url = str(tmp_path / "store")
    plan = fragile_fan.plan(n=40)
    keys = [e["key"] for e in plan.explain(url) if e["step"].startswith("fragile[")]
    assert len(keys) == 40
    with pytest.raises(mk.RunFailed):
        plan.run(store=url, executor="local", progress=False)
    other = Store(url)
    free = []

    def probe() -> None:  # another thread: a thread of the run would share its turns
        for k in keys:
            with other.lock(k, timeout=0) as got:
                free.append(got)

    prober = threading.Thread(target=probe)
    prober.start()
    prober.join(30)
    assert free == [True] * 40


class _Buffering(Executor):
    """Runs what it was given only when flushed, as the dask executor sends its batches."""

    name = "buffering"

    def __init__(self) -> None:
        self.buffer: list[tuple[Task, Callable[[TaskResult], None]]] = []
        self.flushed: list[int] = []

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        self.buffer.append((task, on_done))

    def flush(self) -> None:
        batch, self.buffer = self.buffer, []
        if batch:
            self.flushed.append(len(batch))
        for task, on_done in batch:
            on_done(execute(task, self.store, local_resolver(self.store)))


def test_a_wide_fan_out_keeps_at_most_in_flight_tasks_and_refills_by_halves(
    tmp_path: Path, counters: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what the driver holds per task (the task, its payload) is bounded by the window, not by
    # the width of the fan-out; refilling by halves keeps the batches an executor sends large
    monkeypatch.setattr(scheduler, "IN_FLIGHT", 16)
    executor = _Buffering()
    run = fan.plan(n=100).run(executor=executor, store=tmp_path / "s")
    assert run.output == sum(i * i for i in range(100))
    assert sum(s.status == "executed" for s in run.steps) == 102  # and the gather
    assert max(executor.flushed) == 16 and sum(executor.flushed) == 102
    # the last three: the rest of the elements, the gather, the reduce
    assert all(size >= 8 for size in executor.flushed[:-3])
