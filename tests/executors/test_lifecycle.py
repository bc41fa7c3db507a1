"""What a run calls on its executor, and when: ``start``, ``finish``, ``shutdown``.

The contract's end-of-run hooks: ``finish(interrupted=...)`` once after every run (also one
that stopped early), ``shutdown()`` only for an executor the run built, and an error raised by
that ``shutdown`` (a failed background write) fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mlflowkit as mk
import mlflowkit.executors as executors_module
from mlflowkit.executors.base import Executor, Task, TaskResult
from mlflowkit.stepcall import execute, local_resolver
from mlflowkit.testing import dags

CALLS: list[str] = []


class Lifecycle(Executor):
    """Runs each task inline and records the hooks it is called with."""

    name = "lifecycle"
    shutdown_error: Exception | None = None

    def start(self, store: Any) -> None:
        super().start(store)
        CALLS.append("start")

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        on_done(execute(task, self.store, local_resolver(self.store)))

    def finish(self, *, interrupted: bool = False) -> None:
        CALLS.append(f"finish(interrupted={interrupted})")

    def shutdown(self) -> None:
        CALLS.append("shutdown")
        if self.shutdown_error is not None:
            raise self.shutdown_error


class FailingWrites(Lifecycle):
    shutdown_error = mk.StoreError("a background write failed: disk full")


@mk.step(cache=False)
def press_ctrl_c(x: int) -> int:
    raise KeyboardInterrupt


@mk.pipeline
def ctrl_c(x: int = 1) -> int:
    return press_ctrl_c(x)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(executors_module._REGISTERED, "lifecycle", Lifecycle)
    monkeypatch.setitem(executors_module._REGISTERED, "failing-writes", FailingWrites)
    CALLS.clear()
    yield
    CALLS.clear()


def test_an_instance_passed_in_is_finished_not_shut_down(tmp_path: Any) -> None:
    ex = Lifecycle()
    run = dags.fan.plan(n=3).run(executor=ex, store=str(tmp_path / "s"), progress=False)
    assert run.output == 6
    assert CALLS == ["start", "finish(interrupted=False)"]


def test_an_executor_built_by_name_is_finished_then_shut_down(tmp_path: Any) -> None:
    run = dags.fan.plan(n=3).run(executor="lifecycle", store=str(tmp_path / "s"), progress=False)
    assert run.output == 6
    assert CALLS == ["start", "finish(interrupted=False)", "shutdown"]


def test_a_failed_background_write_reported_by_shutdown_fails_the_run(tmp_path: Any) -> None:
    store = mk.Store(str(tmp_path / "s"))
    with pytest.raises(mk.RunFailed) as info:
        dags.fan.plan(n=3).run(executor="failing-writes", store=store, progress=False)
    assert isinstance(info.value.__cause__, mk.StoreError)
    assert "disk full" in str(info.value.__cause__)
    assert CALLS[-1] == "shutdown"
    (record,) = store.runs()
    assert record.status == "failed"


def test_a_run_that_stopped_early_says_so_to_finish(tmp_path: Any) -> None:
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.plan().run(executor="lifecycle", store=str(tmp_path / "s"), progress=False)
    assert CALLS == ["start", "finish(interrupted=True)", "shutdown"]


def test_a_run_refused_before_it_starts_still_finishes(tmp_path: Any) -> None:
    greedy = mk.step(resources={"gpu": 1}, name="greedy")(dags.identity)

    @mk.pipeline
    def gpu_pipeline(x: int = 1) -> Any:
        return greedy(x)

    with pytest.raises(mk.ExecutorError, match="GPU"):
        gpu_pipeline.plan().run(executor="lifecycle", store=str(tmp_path / "s"), progress=False)
    assert CALLS == ["start", "finish(interrupted=True)", "shutdown"]
