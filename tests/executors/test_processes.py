"""The ``processes`` executor: a reused pool, timeouts, dying workers, values by digest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.executors.base import InMemory, Stored
from mlflowkit.executors.processes import ProcessExecutor
from mlflowkit.testing import dags
from tests.executors.recorder import Recorder
from tests.resources import dag_executors as dx

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pool() -> Iterator[ProcessExecutor]:
    ex = ProcessExecutor(max_workers=2)
    try:
        yield ex
    finally:
        ex.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_are_reused_across_tasks(pool: ProcessExecutor, store: Any) -> None:
    run = dx.pids.plan(n=8).run(executor=pool, store=store, progress=False)
    pids = set(run.output)
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2
    assert set(pool.worker_pids()) >= pids
    again = dx.pids.plan(n=8).run(executor=pool, store=store, progress=False, force=True)
    assert set(again.output) <= set(pool.worker_pids())


def test_a_dying_worker_fails_its_step_and_is_replaced(pool: ProcessExecutor, store: Any) -> None:
    with pytest.raises(mk.RunFailed) as info:
        dx.crashing.plan(x=1).run(executor=pool, store=store, progress=False)
    cause = info.value.__cause__
    assert isinstance(cause, mk.ExecutorError)
    assert "'crash'" in str(cause) and "exit code 7" in str(cause)
    assert info.value.run.step("crash").status == "failed"
    run = dx.wide.plan(n=6).run(executor=pool, store=store, progress=False)
    assert run.output == sum(range(1, 7)) + 6


def test_a_worker_dying_in_a_batch_fails_only_the_task_it_ran(
    pool: ProcessExecutor, store: Any
) -> None:
    # 16 calls of a step not seen yet travel in batches of 4: the call that ends its worker
    # shares a batch with three others, which run again on another worker
    with pytest.raises(mk.RunFailed) as info:
        dx.crash_in_batch.plan(n=16, bad=5).run(executor=pool, store=store, progress=False)
    cause = info.value.__cause__
    assert isinstance(cause, mk.ExecutorError)
    assert "'crash_at[5]'" in str(cause) and "exit code 7" in str(cause)
    statuses = {s.name: s.status for s in info.value.run.steps if s.name.startswith("crash_at[")}
    assert statuses.pop("crash_at[5]") == "failed"
    assert set(statuses.values()) == {"executed"}, statuses
    assert len(statuses) == 15


def test_system_exit_in_a_step_is_a_failure_not_a_death(pool: ProcessExecutor, store: Any) -> None:
    with pytest.raises(mk.RunFailed) as info:
        dx.exiting.plan(x=1).run(executor=pool, store=store, progress=False)
    assert isinstance(info.value.__cause__, SystemExit)
    assert "exits" in (info.value.run.step("exits").traceback or "")


def test_timeout_kills_only_that_worker(pool: ProcessExecutor, store: Any) -> None:
    pool.start(store)
    t0 = time.monotonic()
    with pytest.raises(mk.RunFailed) as info:
        dx.slow_and_fast.plan(n=4).run(executor=pool, store=store, progress=False)
    assert time.monotonic() - t0 < 10
    cause = info.value.__cause__
    assert isinstance(cause, TimeoutError)
    assert "'too_slow'" in str(cause) and "0.5 s" in str(cause) and "killed" in str(cause)
    assert info.value.run.step("too_slow").status == "failed"
    run = dx.wide.plan(n=4).run(executor=pool, store=store, progress=False)
    assert run.output == 14


def test_remote_traceback_travels(pool: ProcessExecutor, store: Any) -> None:
    with pytest.raises(mk.RunFailed) as info:
        dags.failing.plan(n=1).run(executor=pool, store=store, progress=False)
    text = info.value.run.step("explode").traceback or ""
    assert "dags.py" in text and "raise ValueError" in text
    assert "Traceback of the step" in str(info.value)


def test_large_outputs_come_back_as_digests(pool: ProcessExecutor, store: Any) -> None:
    rec = Recorder(pool)
    run = dx.big_plain.plan(mb=4).run(executor=rec, store=store, progress=False)
    assert run.output == 4 * 1024 * 1024 // 8
    big = rec.results["big_array"]
    assert big.value == Stored(big.output_digest)
    assert isinstance(rec.results["total_of"].value, InMemory)  # small: by value too


def test_input_arrays_arrive_read_only_as_on_every_executor(
    pool: ProcessExecutor, store: Any
) -> None:
    run = dx.arrays.plan(n=100).run(executor=pool, store=store, progress=False)
    assert run.output[0] == 200.0
    with pytest.raises(mk.RunFailed) as info:
        dx.mutating.plan(n=10).run(executor=pool, store=store, progress=False)
    assert isinstance(info.value.__cause__, mk.InputMutationError)


def test_a_memory_store_is_written_by_the_driver(pool: ProcessExecutor) -> None:
    store = mk.Store("memory://processes-test")
    first = dags.diamond.plan(n=3).run(executor=pool, store=store, progress=False)
    again = dags.diamond.plan(n=3).run(executor=pool, store=store, progress=False)
    assert {s.status for s in again.steps} == {"cached"}
    assert again.output == first.output


def test_steps_defined_in_main_are_shipped(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
        import mlflowkit as mk

        @mk.step
        def triple(x: int) -> int:
            return 3 * x

        @mk.pipeline
        def main_pipeline(x: int = 2):
            return triple(triple(x))

        run = main_pipeline.plan(x=5).run(executor="processes", store=STORE, progress=False)
        print("OUTPUT", run.output)
        """
        ).replace("STORE", repr(str(tmp_path / "store")))
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "OUTPUT 45" in out.stdout


def test_unpicklable_input_fails_clearly(pool: ProcessExecutor, store: Any) -> None:
    import threading

    lock = threading.Lock()

    @mk.step(version="1")
    def use(x: Any) -> int:
        return 1

    @mk.pipeline
    def p() -> Any:
        return use(lock)

    with pytest.raises((mk.RunFailed, mk.HashingError)) as info:
        p.plan().run(executor=pool, store=store, progress=False)
    assert "lock" in str(info.value).lower()


@pytest.mark.parametrize("bad", [0, -3, True, 2.0])
def test_bad_max_workers(bad: Any) -> None:
    with pytest.raises(mk.ExecutorError, match="max_workers"):
        ProcessExecutor(max_workers=bad)


def test_an_executor_dropped_without_shutdown_stops_its_workers(store: Any) -> None:
    import gc

    ex = ProcessExecutor(max_workers=1)
    dags.diamond.plan(n=1).run(executor=ex, store=store, progress=False)
    pids = ex.worker_pids()
    assert pids
    del ex
    gc.collect()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
