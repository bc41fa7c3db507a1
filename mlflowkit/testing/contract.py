"""The executor contract as a pytest test class, for built-in executors and plugins alike.

Use it in your own test suite::

    from mlflowkit.testing import ExecutorContract

    class TestMyExecutor(ExecutorContract):
        def make_executor(self):
            return MyExecutor(...)

Every test builds a fresh executor with ``make_executor()`` (or override the ``executor``
fixture when building one needs other fixtures), runs small pipelines from
:mod:`mlflowkit.testing.dags` through the public API, and shuts the executor down.

Invariants the suite checks
---------------------------
* The same pipeline gives the same outputs and the same output digests as ``local``.
* Every submitted task is reported through ``on_done`` exactly once.
* A failing step makes ``plan.run`` raise ``RunFailed`` with the step's exception chained and
  the traceback text of where it ran; retries are counted in ``attempts``.
* Cache entries written by another executor are hits, and this executor's entries are hits
  for ``local``.
* A fan-out over a list known only at run time works (the executor reports ``meta``).
* A step asking for more GPUs than ``capabilities.gpus`` is refused before anything runs.
* ``timeout`` hints are enforced when ``capabilities.can_timeout`` says so.
* ``shutdown()`` may be called more than once, also without a run.
* A run that stopped early (``finish(interrupted=True)``) leaves the executor ready for the
  next run; ``describe()`` is one line of text.

Only ``submit`` is required of an executor: the suite passes for one that implements nothing
else (``tests/executors/test_contract.py`` checks that).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.executors.base import Executor, Task, TaskResult
from mlflowkit.testing import dags

__all__ = ["ExecutorContract"]


class _Spy(Executor):
    """Wraps an executor and counts the results reported for each submitted task."""

    name = "contract-spy"

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.submitted: list[str] = []
        self.reported: Counter[str] = Counter()
        self._lock = threading.Lock()

    def start(self, store: Any) -> None:
        self.inner.start(store)
        self.capabilities = self.inner.capabilities

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        with self._lock:
            self.submitted.append(task.name)

        def done(result: TaskResult) -> None:
            with self._lock:
                self.reported[result.name] += 1
            on_done(result)

        self.inner.submit(task, done)

    def flush(self) -> None:
        self.inner.flush()

    def finish(self, *, interrupted: bool = False) -> None:
        self.inner.finish(interrupted=interrupted)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def describe(self) -> str:
        return self.inner.describe()


def _digests(run: mk.Run) -> dict[str, str | None]:
    return {s.name: s.output_digest for s in run.steps}


class ExecutorContract:
    """Tests every executor must pass; subclass and override :meth:`make_executor`."""

    #: Seconds a step sleeping 4 s past its 0.5 s timeout may take to be reported as failed.
    timeout_grace_s: float = 3.0

    def make_executor(self) -> Executor:
        """Build the executor under test (a fresh one for each test)."""
        raise NotImplementedError(
            "Subclass ExecutorContract and override make_executor() to return your executor."
        )

    @pytest.fixture
    def executor(self) -> Iterator[Executor]:
        """The executor under test, shut down after the test."""
        ex = self.make_executor()
        try:
            yield ex
        finally:
            ex.shutdown()

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        """A fresh store folder for the test."""
        return str(tmp_path / "store")

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def run(plan: mk.Plan, executor: Any, store: Any, **options: Any) -> mk.Run:
        """Run ``plan`` without a progress display."""
        return plan.run(executor=executor, store=store, progress=False, **options)

    # --- the contract -------------------------------------------------------------------------
    def test_outputs_and_digests_match_local(
        self, executor: Executor, store_url: str, tmp_path: Path
    ) -> None:
        plan = dags.diamond.plan(n=5)
        expected = self.run(plan, "local", str(tmp_path / "local-store"))
        run = self.run(plan, executor, store_url)
        assert run.status == "succeeded"
        assert run.output == expected.output
        assert _digests(run) == _digests(expected)
        assert {s.status for s in run.steps} == {"executed"}

    def test_one_result_per_task(self, executor: Executor, store_url: str) -> None:
        spy = _Spy(executor)
        run = self.run(dags.fan.plan(n=7), spy, store_url)
        assert run.output == sum(2 * i for i in range(7))
        time.sleep(0.05)  # a duplicate report would arrive late
        assert spy.submitted, "no task was submitted"
        assert sorted(spy.reported) == sorted(set(spy.submitted))
        assert len(spy.submitted) == len(set(spy.submitted))
        assert set(spy.reported.values()) == {1}

    def test_failure_raises_run_failed_with_cause(self, executor: Executor, store_url: str) -> None:
        with pytest.raises(mk.RunFailed) as info:
            self.run(dags.failing.plan(n=3), executor, store_url)
        err = info.value
        assert err.step == "explode"
        assert isinstance(err.__cause__, ValueError)
        assert "boom: cannot handle 6" in str(err.__cause__)
        failed = err.run.step("explode")
        assert failed.status == "failed"
        assert "boom" in (failed.error or "")
        assert "explode" in (failed.traceback or "")
        assert "explode" in str(err)
        assert err.run.step("double").status == "executed"

    def test_finished_steps_are_cached_after_a_failure(
        self, executor: Executor, store_url: str
    ) -> None:
        with pytest.raises(mk.RunFailed):
            self.run(dags.failing.plan(n=2), executor, store_url)
        with pytest.raises(mk.RunFailed) as info:
            self.run(dags.failing.plan(n=2), "local", store_url)
        assert info.value.run.step("double").status == "cached"

    def test_retries_are_counted_in_attempts(self, executor: Executor, store_url: str) -> None:
        run = self.run(dags.retrying.plan(x=7), executor, store_url)
        assert run.output == 7
        assert run.step("flaky").attempts == 3

    def test_cache_hits_from_another_executor(self, executor: Executor, store_url: str) -> None:
        first = self.run(dags.diamond.plan(n=3), "local", store_url)
        again = self.run(dags.diamond.plan(n=3), executor, store_url)
        assert {s.status for s in again.steps} == {"cached"}
        assert again.output == first.output
        assert _digests(again) == _digests(first)

    def test_its_results_are_hits_for_local(self, executor: Executor, store_url: str) -> None:
        first = self.run(dags.fan.plan(n=4), executor, store_url)
        again = self.run(dags.fan.plan(n=4), "local", store_url)
        assert {s.status for s in again.steps} == {"cached"}
        assert again.output == first.output == 12

    def test_map_over_a_ref(self, executor: Executor, store_url: str) -> None:
        run = self.run(dags.fan.plan(n=5), executor, store_url)
        assert run.output == 20
        names = {s.name for s in run.steps}
        assert {f"double[{i}]" for i in range(5)} <= names

    def test_force_re_executes(self, executor: Executor, store_url: str) -> None:
        self.run(dags.diamond.plan(n=2), executor, store_url)
        run = self.run(dags.diamond.plan(n=2), executor, store_url, force=True)
        assert {s.status for s in run.steps} == {"executed"}

    def test_current_step_context(self, executor: Executor, store_url: str) -> None:
        run = self.run(dags.context.plan(x=3), executor, store_url)
        assert run.output["name"] == "whoami"
        assert run.output["run_id"] == run.id
        assert run.output["key"] == run.step("whoami").key

    def test_steps_defined_in_a_test_are_shipped(self, executor: Executor, store_url: str) -> None:
        offset = 100

        @mk.step
        def shift(x: int) -> int:
            return x + offset

        @mk.pipeline
        def local_pipeline(x: int = 1) -> Any:
            return shift(dags.double(x))

        assert self.run(local_pipeline.plan(x=4), executor, store_url).output == 108

    def test_gpu_placement_refused_beyond_capabilities(
        self, executor: Executor, store_url: str
    ) -> None:
        executor.start(mk.Store(store_url))
        wanted = executor.capabilities.gpus + 1
        greedy = mk.step(resources={"gpu": wanted}, name="greedy")(dags.identity)

        @mk.pipeline
        def gpu_pipeline(x: int = 1) -> Any:
            return greedy(x)

        with pytest.raises(mk.ExecutorError, match="GPU"):
            self.run(gpu_pipeline.plan(), executor, store_url)
        assert mk.Store(store_url).runs() == []

    def test_executor_serves_two_runs(self, executor: Executor, store_url: str) -> None:
        assert self.run(dags.fan.plan(n=3), executor, store_url).output == 6
        assert self.run(dags.fan.plan(n=4), executor, store_url).output == 12

    def test_shutdown_is_idempotent(self, store_url: str) -> None:
        unused = self.make_executor()
        unused.shutdown()
        unused.shutdown()
        ex = self.make_executor()
        try:
            assert self.run(dags.diamond.plan(n=1), ex, store_url).status == "succeeded"
        finally:
            ex.shutdown()
        ex.shutdown()

    def test_timeout_is_enforced_or_declared_unenforced(
        self, executor: Executor, store_url: str
    ) -> None:
        if not executor.capabilities.can_timeout:
            # declared can_timeout=False: the run says so, and the step finishes
            with pytest.warns(UserWarning, match="not enforced"):
                run = self.run(dags.sleeping.plan(seconds=0.8), executor, store_url)
            assert run.status == "succeeded"
            assert run.output == 0.8
            return
        t0 = time.monotonic()
        with pytest.raises(mk.RunFailed) as info:
            self.run(dags.sleeping.plan(seconds=4.0), executor, store_url)
        assert time.monotonic() - t0 < self.timeout_grace_s
        assert isinstance(info.value.__cause__, TimeoutError)
        assert "sleep_for" in str(info.value.__cause__)
        assert "0.5" in str(info.value.__cause__)

    def test_serves_a_run_after_one_that_stopped_early(
        self, executor: Executor, store_url: str
    ) -> None:
        executor.start(mk.Store(store_url))
        executor.finish(interrupted=True)  # e.g. Ctrl-C before anything was submitted
        assert self.run(dags.fan.plan(n=3), executor, store_url).output == 6

    def test_describe_is_one_line(self, executor: Executor) -> None:
        text = executor.describe()
        assert isinstance(text, str)
        assert text
        assert "\n" not in text
        assert text in repr(executor)
