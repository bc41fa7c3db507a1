"""What ``SystemExit``, ``GeneratorExit`` and ``KeyboardInterrupt`` from a step mean, and Ctrl-C.

The same on every executor: ``SystemExit`` and ``GeneratorExit`` raised by a step are step
failures (``RunFailed``, chaining them); ``KeyboardInterrupt`` (Ctrl-C, or a step raising it)
stops the run at once, without waiting for the steps still running, records it as
``interrupted`` and is raised again. Before, on ``threads`` such an exception ended the worker
thread and the run waited for ever; on ``local`` it escaped and left the record ``running``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.executors.base import Executor
from mlflowkit.executors.threads import ThreadExecutor

EXECUTORS = ["local", "threads", "processes"]

#: ends the long steps of this process when a test is over (a thread cannot be stopped, so the
#: steps an interrupted ``threads`` run left running would otherwise outlive the test)
_RELEASE = threading.Event()


@mk.step(cache=False)
def leave(kind: str) -> int:
    raise {"exit": SystemExit(3), "generator": GeneratorExit(), "ctrl-c": KeyboardInterrupt()}[kind]


@mk.step(cache=False, retries=2)
def leave_with_retries(kind: str) -> int:
    return leave.fn(kind)  # type: ignore[no-any-return]


@mk.step(cache=False)
def press_ctrl_c(pid: int) -> int:
    """Send SIGINT to the driver (this process on local and threads), then take long."""
    time.sleep(0.2)
    os.kill(pid, signal.SIGINT)
    _RELEASE.wait(30)
    return 0


@mk.step(cache=False)
def slow(i: int) -> int:
    _RELEASE.wait(30)
    return i


@mk.pipeline
def leaves(kind: str) -> int:
    return leave(kind)


@mk.pipeline
def leaves_with_retries(kind: str) -> int:
    return leave_with_retries(kind)


@mk.pipeline
def interrupted(pid: int, n: int = 6) -> Any:
    pressed = press_ctrl_c(pid)
    return pressed, slow.map(i=list(range(n)))


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    yield from _executor(request)


@pytest.fixture(params=[*EXECUTORS, pytest.param("dask", marks=pytest.mark.dask)])
def any_executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """Every executor, Dask's too (for tests whose steps end at once: the cluster is shared)."""
    yield from _executor(request)


def _executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    if request.param == "dask":
        ex = mk.executors.get("dask", address=request.getfixturevalue("dask_address"))
    else:
        ex = mk.executors.get(request.param, max_workers=3)
    try:
        yield ex
    finally:
        threads = list(ex._threads) if isinstance(ex, ThreadExecutor) else []
        _RELEASE.set()  # the steps an interrupted run left running end now
        ex.shutdown()
        for thread in threads:
            thread.join(10)
        _RELEASE.clear()


@pytest.fixture(autouse=True)
def _ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here, as in a plain Python process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["exit", "generator"])
def test_systemexit_and_generatorexit_are_step_failures(
    any_executor: Executor, kind: str, store: Any
) -> None:
    executor = any_executor
    with pytest.raises(mk.RunFailed) as info:
        leaves.plan(kind=kind).run(executor=executor, store=store, progress=False)
    expected = SystemExit if kind == "exit" else GeneratorExit
    assert type(info.value.__cause__) is expected
    assert info.value.step == "leave"
    assert info.value.run.status == "failed"
    assert (info.value.run.step("leave").error or "").startswith(expected.__name__)
    assert [r.status for r in store.runs()] == ["failed"]
    # ordinary failures: retried like any other
    with pytest.raises(mk.RunFailed) as info:
        leaves_with_retries.plan(kind=kind).run(executor=executor, store=store, progress=False)
    assert info.value.run.step("leave_with_retries").attempts == 3


@pytest.mark.timeout(60)
def test_a_step_raising_keyboardinterrupt_interrupts_the_run(
    any_executor: Executor, store: Any
) -> None:
    executor = any_executor
    with pytest.raises(KeyboardInterrupt):
        leaves_with_retries.plan(kind="ctrl-c").run(executor=executor, store=store, progress=False)
    (record,) = store.runs()
    assert record.status == "interrupted"
    (step,) = record.steps
    assert step.status == "failed" and step.attempts == 1  # never retried
    assert (step.error or "").startswith("KeyboardInterrupt")
    # the executor still works for the next run
    with pytest.raises(mk.RunFailed):
        leaves.plan(kind="exit").run(executor=executor, store=store, progress=False)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_a_run_promptly_and_marks_it_interrupted(
    executor: Executor, store: Any
) -> None:
    """Ctrl-C while steps of 30 s run: the run ends within seconds, not when they end."""
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupted.plan(pid=os.getpid()).run(executor=executor, store=store, progress=False)
    assert time.monotonic() - t0 < 15
    (record,) = store.runs()
    assert record.status == "interrupted" and record.finished_at is not None
    statuses = {s.name: s.status for s in record.steps}
    assert "executed" not in statuses.values(), statuses
    assert all(statuses[f"slow[{i}]"] == "skipped" for i in range(6)), statuses
    if executor.name == "processes":  # the workers running its steps were killed
        pool = executor._pool  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while any(p.busy for p in pool.procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(p.busy for p in pool.procs)  # (workers still starting then stay idle)
