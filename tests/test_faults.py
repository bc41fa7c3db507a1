"""Faults in real processes: SIGKILL at random moments, concurrent runs, flipped bytes.

Acceptance tests of the "Repeatability" issue, written against the public API. The stores are
real folders; the processes are real (forked from a preloaded server, or fresh interpreters).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import mlflowkit as mk
from mlflowkit.cli import main
from tests.holders import flip_last_byte, held_entry_keys, held_records, object_bytes
from tests.resources import dag_faults

ROOT = Path(__file__).resolve().parent.parent
MIN_KILLS = 50
STALL_LIMIT_S = 10.0  # a run of these pipelines takes well under a second


@pytest.fixture(scope="module")
def forkserver() -> Any:
    """Processes forked from a server that has already imported mlflowkit and the pipelines.

    A run then starts in milliseconds, so kills land while steps run, not while an interpreter
    starts.
    """
    if "forkserver" not in mp.get_all_start_methods():
        pytest.skip("needs the forkserver start method")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(
        [
            "numpy",
            "beartype.door",
            "beartype.roar",
            "cloudpickle",
            "fsspec.implementations.local",
            "mlflowkit.driver",
            "mlflowkit.hashing.arrays",
            "mlflowkit.store.fsspec",
            "mlflowkit.executors.local",
            "tests.resources.dag_faults",
        ]
    )
    run_in_child(context, os.getpid)  # starts the server
    return context


@dataclass
class Reference:
    """A clean run of ``dag_faults.faulty`` in a fresh store, and how long runs take here."""

    store: Any
    keys: dict[str, str]
    digests: dict[str, str]
    durations: dict[str, float]
    child_full_s: float = 0.0  # a run in a forked process, from start to exit
    child_cached_s: float = 0.0  # the same, with every step cached

    def remaining_s(self, done: set[str]) -> float:
        """Estimated wall time of a run in a child when the steps in ``done`` are cached."""
        work = sum(self.durations.values())
        left = sum(d for n, d in self.durations.items() if n not in done)
        return self.child_cached_s + (self.child_full_s - self.child_cached_s) * left / work


def run_in_child(context: Any, target: Any, *args: Any) -> float:
    """Run ``target(*args)`` in a new process; its wall time from start to exit."""
    started = time.perf_counter()
    proc = context.Process(target=target, args=args)
    proc.start()
    proc.join()
    assert proc.exitcode == 0
    return time.perf_counter() - started


@pytest.fixture
def reference(tmp_path: Path, forkserver: Any) -> Reference:
    store = mk.Store(str(tmp_path / "reference"))
    run = dag_faults.faulty.plan().run(store=store, progress=False)
    assert {s.status for s in run.steps} == {"executed"}
    ref = Reference(
        store=store,
        keys={s.name: s.key or "" for s in run.steps},
        digests={s.name: s.output_digest or "" for s in run.steps},
        durations={s.name: s.duration_s for s in run.steps},
    )
    full, cached = [], []
    for attempt in range(2):  # the faster of two tries: timings on a busy machine only grow
        scratch = str(tmp_path / f"timing-{attempt}")
        full.append(run_in_child(forkserver, dag_faults.run_child, scratch))
        cached.append(run_in_child(forkserver, dag_faults.run_child, scratch))
    ref.child_full_s, ref.child_cached_s = min(full), min(cached)
    return ref


def expected_statuses(keys: dict[str, str], before: set[str], store: Any) -> dict[str, str]:
    """Steps with a cache entry before the run are cached, the others execute.

    Items of a list or tuple output (``parent.3``) have no cache entry of their own: they are
    views answered from the parent's item digests, so they follow their parent.
    """
    views = {n for n, k in keys.items() if store.get_cache(k) is None}
    expected = {n: "cached" if n in before else "executed" for n in keys if n not in views}
    for name in sorted(views, key=lambda n: n.count(".")):
        expected[name] = expected[name.rsplit(".", 1)[0]]
    return expected


def cache_files(store: Any) -> list[str]:
    """The keys of the cache entries on disk: files (``cache/ab/<key>.json``) and records of
    segment files."""
    return sorted(
        [p.stem for p in Path(store.root, "cache").glob("*/*.json")] + held_entry_keys(store)
    )


def assert_consistent(store: Any) -> None:
    """What a killed writer may leave behind: nothing corrupt, nothing dangling."""
    if not store.exists():  # killed before its run laid out the store: it wrote nothing
        assert not Path(store.root, "runs").exists()
        return
    assert store.verify() == []
    # every cache entry file on disk is whole and points at an object that is there
    for key in cache_files(store):
        assert store.get_cache(key) is not None, key
    # every run record is readable; killed runs read as interrupted (their process is gone)
    records = store.runs()
    files = [*Path(store.root, "runs").glob("*.json"), *Path(store.root, "runs").glob("*.started")]
    assert len(records) == len({p.name.rsplit(".", 1)[0] for p in files})
    assert {r.status for r in records} <= {"interrupted", "succeeded"}


def assert_du_matches_files(store: Any) -> None:
    """``store.du()`` counts the files that are there (layout: ``objects/ab/<digest>``, ...)."""
    du = store.du()
    held = held_records(store)
    for area in ("objects", "cache", "runs"):
        on_disk = [p for p in Path(store.root, area).rglob("*") if p.is_file()]
        records = held.get(area, [])
        assert (du[area]["count"], du[area]["bytes"]) == (
            len(on_disk) + len(records),
            sum(p.stat().st_size for p in on_disk) + sum(records),
        ), area
    segments = list(Path(store.root, "segments").rglob("*.seg"))
    assert du["segments"]["count"] == len(segments)
    assert du["segments"]["bytes"] + sum(held.get("objects", []) + held.get("cache", [])) == sum(
        p.stat().st_size for p in segments
    )


def assert_same_outputs(run: mk.Run, store: Any, ref: Reference) -> None:
    assert {s.name: s.output_digest for s in run.steps} == ref.digests
    for name, digest in ref.digests.items():
        if ref.store.has(digest):  # persisted (not a derived view such as describe.0)
            expected = ref.store.get(digest)
            got = store.get(digest)
            if isinstance(expected, np.ndarray):
                np.testing.assert_array_equal(got, expected)
            else:
                assert got == expected, name
            assert mk.hash_value(got) == digest


def user_calls(names: Any) -> set[str]:
    """Step calls of user functions (not derived views such as ``describe.0`` or gathers)."""
    return {n for n in names if "." not in n and n != "square"}


@pytest.mark.timeout(180)
def test_sigkill_at_random_moments_never_corrupts_and_runs_resume(
    tmp_path: Path, reference: Reference, forkserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20240611)
    kills = cycles = mid_pipeline = 0
    while kills < MIN_KILLS:
        # durable=False: a killed process loses nothing the kernel already has, and flushing
        # to disk would only make the test wait on other writers of this filesystem
        # a killed run's single-flight locks die with it (kernel record locks on a local store)
        store = mk.Store(str(tmp_path / f"store-{cycles}"), durable=False)
        for _ in range(rng.randint(3, 9)):  # kills in this store before its final run
            done = {n for n, k in reference.keys.items() if store.get_cache(k) is not None}
            proc = forkserver.Process(target=dag_faults.run_child, args=(store.url,))
            proc.start()
            proc.join(rng.uniform(0.0, reference.remaining_s(done)))
            if proc.exitcode is None:
                proc.kill()
            proc.join()
            assert proc.exitcode in (0, -signal.SIGKILL)
            finished = proc.exitcode == 0  # it may finish just before the kill
            kills += not finished
            assert_consistent(store)
            cached = sum(store.get_cache(k) is not None for k in reference.keys.values())
            mid_pipeline += 0 < cached < len(reference.keys) and not finished
            if finished:
                break

        # the final run, in this process and counted: it executes exactly what had not finished
        before = {n for n, k in reference.keys.items() if store.get_cache(k) is not None}
        counters = tmp_path / f"counters-{cycles}"
        counters.mkdir()
        monkeypatch.setenv(dag_faults.COUNTERS_ENV, str(counters))
        run = dag_faults.faulty.plan().run(store=store, progress=False)
        monkeypatch.delenv(dag_faults.COUNTERS_ENV)
        assert run.status == "succeeded"
        statuses = {s.name: s.status for s in run.steps}
        assert statuses == expected_statuses(reference.keys, before, store)
        executed = user_calls(n for n, st in statuses.items() if st == "executed")
        assert dag_faults.executions(counters) == dict.fromkeys(executed, 1)
        assert_same_outputs(run, store, reference)
        assert_consistent(store)
        assert run.output == reference.store.get(reference.digests["report"])
        store.close()
        cycles += 1

    assert kills >= MIN_KILLS
    # a good share of the kills interrupted a pipeline half way (some steps cached, not all)
    assert mid_pipeline >= 10, (mid_pipeline, kills, cycles)


@pytest.mark.timeout(120)
def test_a_process_killed_holding_a_lock_does_not_stall_the_next_run(
    tmp_path: Path, forkserver: Any
) -> None:
    url = str(tmp_path / "store")
    proc = forkserver.Process(target=dag_faults.run_child_killed_after_taking_a_lock, args=(url,))
    proc.start()
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    # a local store's locks are record locks on one file, never a file per lock left behind
    assert [p.name for p in Path(url, "locks").iterdir()] == ["flight"]
    # the kernel dropped the killed holder's lock: the next run takes the step over at once
    # (a run takes well under a second here)
    proc = forkserver.Process(target=dag_faults.run_child, args=(url,))
    started = time.perf_counter()
    proc.start()
    proc.join(STALL_LIMIT_S)
    waited = time.perf_counter() - started
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    assert proc.exitcode == 0, (
        f"the run after the kill was still waiting on the killed holder's lock after {waited:.0f} s"
    )
    with mk.Store(url) as store:
        assert store.verify() == []


def test_du_counts_what_a_killed_run_wrote(tmp_path: Path, forkserver: Any) -> None:
    url = str(tmp_path / "store")
    # the run is killed in `consume`, after `produce` wrote its object and cache entry
    proc = forkserver.Process(target=dag_faults.run_pair_killed_in, args=(url, "consume"))
    proc.start()
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    with mk.Store(url) as store:
        run = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
        assert run.step("produce").status == "cached"
        assert run.step("consume").status == "executed"
        assert_du_matches_files(store)


# several processes on one store --------------------------------------------------------------


@pytest.mark.timeout(180)
def test_concurrent_processes_on_one_store_execute_each_call_once(tmp_path: Path) -> None:
    url = str(tmp_path / "shared")
    counters = tmp_path / "counters"
    counters.mkdir()
    go = tmp_path / "go"
    env = {
        **os.environ,
        dag_faults.COUNTERS_ENV: str(counters),
        "OPENBLAS_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.resources.dag_faults", url, str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < len(procs):  # interpreters started
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()  # they all begin at once
    results = []
    for p in procs:
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, err
        assert "database is locked" not in err + out
        assert "Traceback" not in err
        results.append(json.loads(out))

    assert all(r["status"] == "succeeded" for r in results)
    # identical outputs and keys everywhere
    assert len({r["output"] for r in results}) == 1
    assert len({json.dumps({n: s[1:] for n, s in r["steps"].items()}) for r in results}) == 1
    # single flight: every user step call executed exactly once across the four processes
    ran = dag_faults.executions(counters)
    calls = user_calls(results[0]["steps"])
    assert len(calls) == 6 * 3 + 1 + 1 + 8 + 1 + 1 + 1  # load/scale/stats, describe, items, ...
    assert ran == dict.fromkeys(calls, 1)
    for name in calls:
        statuses = sorted(r["steps"][name][0] for r in results)
        assert statuses == ["cached", "cached", "cached", "executed"], name
    with mk.Store(url) as store:
        assert store.verify() == []
        assert_du_matches_files(store)
        records = store.runs()
    assert len(records) == 4 and {r.status for r in records} == {"succeeded"}
    # the four runs were all in flight at one moment
    assert max(r.started_at for r in records) < min(r.finished_at or 0 for r in records)


# a flipped byte --------------------------------------------------------------------------------


@pytest.fixture
def counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "counters"
    folder.mkdir()
    monkeypatch.setenv(dag_faults.COUNTERS_ENV, str(folder))
    return folder


def test_verify_reports_a_flipped_byte_in_a_step_output(store: Any, counters: Path) -> None:
    run = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
    produced = run.step("produce").output_digest
    assert produced is not None and store.has(produced)
    assert store.verify() == []
    flip_last_byte(store, produced)
    assert store.verify() == [produced]
    assert not store.has(produced)  # set aside
    assert store.verify() == []
    # the next run re-executes the producer (its cache entry went with the object)
    again = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
    assert again.step("produce").status == "executed"
    assert again.step("consume").status == "cached"
    assert store.has(produced) and store.verify() == []
    assert dag_faults.executions(counters) == {"produce": 2, "consume": 1}


def test_corrupt_input_is_healed_by_re_running_its_producer(store: Any, counters: Path) -> None:
    first = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
    expected = first.output[1]
    produced = first.step("produce").output_digest
    assert produced is not None
    flip_last_byte(store, produced)
    run = dag_faults.pair.plan(n=1000).run(store=store, progress=False, force=["consume"])
    assert run.status == "succeeded"
    assert run.step("produce").status == "executed"
    assert run.step("consume").status == "executed"
    assert run.step("produce").output_digest == produced
    x, total = run.output
    np.testing.assert_array_equal(x, np.arange(1000) * 0.5)
    assert total == expected == float((np.arange(1000) * 0.5).sum())
    assert dag_faults.executions(counters) == {"produce": 2, "consume": 2}
    assert store.verify() == []
    assert mk.hash_value(store.get(produced)) == produced


def test_a_corrupt_output_never_loads_from_a_run_record(store: Any, counters: Path) -> None:
    run = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
    produced = run.step("produce").output_digest
    assert produced is not None
    assert run.record.output["$tuple"][0] == {"$digest": produced}
    flip_last_byte(store, produced)
    later = mk.Run(store.run(run.id), store)
    with pytest.raises(mk.StoreError) as info:
        later.output  # noqa: B018
    assert isinstance(info.value, mk.CorruptObjectError)
    assert produced in str(info.value)
    # asked again, it still refuses: the object was set aside, never served
    with pytest.raises(mk.StoreError):
        mk.Run(store.run(run.id), store).output  # noqa: B018
    # and the producer executes again on the next run, which loads fine
    again = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
    assert again.step("produce").status == "executed"
    np.testing.assert_array_equal(
        mk.Run(store.run(again.id), store).output[0], np.arange(1000) * 0.5
    )


def test_an_output_copied_over_another_is_never_served(store: Any, counters: Path) -> None:
    small = dag_faults.pair.plan(n=10).run(store=store, progress=False)
    big = dag_faults.pair.plan(n=1000).run(store=store, progress=False)
    source, target = small.step("produce").output_digest, big.step("produce").output_digest
    assert source and target
    # a mix-up: n=10's array copied over n=1000's (a whole, valid object file)
    data = object_bytes(store, source)  # n=10's (held in a segment: a small value)
    Path(store.root, "objects", target[:2], target).write_bytes(data)
    run = dag_faults.pair.plan(n=1000).run(store=store, progress=False, force=["consume"])
    x, total = run.output
    np.testing.assert_array_equal(x, np.arange(1000) * 0.5)  # not n=10's value
    assert total == float((np.arange(1000) * 0.5).sum())
    assert run.step("produce").status == "executed"  # its producer ran again
    assert store.verify() == []


# gc while a run is in progress ----------------------------------------------------------------

GC_REPORTS: list[Any] = []


@mk.step
def arange(n: int) -> np.ndarray:
    return np.arange(n)


@mk.step
def fresh(k: int) -> list[int]:
    return [k, k]


@mk.step
def collect_now(x: np.ndarray, y: list[int], url: str, k: int) -> int:
    if k == 2:  # another user collects garbage while this run is in progress
        GC_REPORTS.append(mk.Store(url).gc(keep_last=0))
    return int(x.sum()) + sum(y)


@mk.pipeline
def hit_then_gc(url: str, n: int = 5, k: int = 1) -> Any:
    x = arange(n)
    return x, collect_now(x, fresh(k), url, k)


def test_gc_during_a_run_takes_nothing_the_run_uses(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    GC_REPORTS.clear()
    hit_then_gc.plan(url=url, k=1).run(store=url, progress=False)
    run = hit_then_gc.plan(url=url, k=2).run(store=url, progress=False)
    assert len(GC_REPORTS) == 1  # the gc ran in the middle of the run
    assert run.step("arange").status == "cached"
    x, total = run.output  # the cached array, returned after the gc
    np.testing.assert_array_equal(x, np.arange(5))
    assert total == 10 + 4
    with mk.Store(url) as store:
        written = run.step("fresh").output_digest
        assert written and store.has(written)  # what the run wrote before the gc is still there
        later = mk.Run(store.run(run.id), store).output
        np.testing.assert_array_equal(later[0], np.arange(5))


# writing the run record fails ----------------------------------------------------------------


@mk.step
def explode(n: int) -> int:
    raise ValueError(f"bad n={n}")


@mk.pipeline
def failing(n: int = 1) -> int:
    return explode(n)


@mk.pipeline
def fine(n: int = 1) -> list[int]:
    return fresh(n)


def _disk_full_for_records(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    store.create()
    real = store._io._write_atomic

    def write(path: str, parts: Any, durable: bool) -> None:
        if "/runs/" in path and path.endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, parts, durable)

    monkeypatch.setattr(store._io, "_write_atomic", write)


def test_disk_full_while_writing_the_record_keeps_the_run_failed(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_for_records(store, monkeypatch)
    with pytest.raises(mk.RunFailed) as info:
        failing.plan(n=3).run(store=store, progress=False)
    assert isinstance(info.value.__cause__, ValueError)  # the step's own error
    assert "bad n=3" in str(info.value)
    assert "run record could not be written" in str(info.value)
    assert "No space left on device" in str(info.value)
    assert not list(Path(store.root, "runs").glob("*.started"))  # nothing claims it is running


def test_disk_full_while_writing_the_record_of_a_good_run_is_a_store_error(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_for_records(store, monkeypatch)
    with pytest.raises(mk.StoreError, match="No space left on device"):
        fine.plan(n=4).run(store=store, progress=False)
    assert not list(Path(store.root, "runs").glob("*.started"))


# runs whose process was killed -----------------------------------------------------------------


def test_a_run_killed_with_sigkill_reads_as_interrupted(tmp_path: Path, forkserver: Any) -> None:
    url = str(tmp_path / "store")
    proc = forkserver.Process(target=dag_faults.run_pair_killed_in, args=(url, "consume"))
    proc.start()
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    with mk.Store(url) as store:
        [record] = store.runs()
        assert record.status == "interrupted"
        assert record.owner["pid"] == proc.pid
        assert list(Path(url, "runs").glob("*.started"))  # the file is left as it was
    out = CliRunner().invoke(main, ["runs", "list", "--store", url])
    assert out.exit_code == 0 and "interrupted" in out.output
