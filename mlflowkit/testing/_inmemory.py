"""``InMemoryExecutor``: the executor test double.

Invariants
----------
* ``submit`` runs the task to completion inline (through ``stepcall.execute``, like ``local``)
  and reports it through ``on_done`` exactly once before returning.
* Everything it is asked to do is recorded, in order: ``submitted`` (task names), ``results``,
  ``flushes``, ``starts``, ``shutdowns``.
* An injected failure is raised *by the step's function*, so retries, attempts, tracebacks and
  ``RunFailed`` behave exactly as for a real failure of the user's code.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import ExecutorError
from mlflowkit.executors.base import Capabilities, Executor, Task, TaskResult
from mlflowkit.step import Step
from mlflowkit.stepcall import execute, local_resolver

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["InMemoryExecutor"]


@dataclass
class _Failure:
    error: BaseException | type[BaseException]
    times: int | None
    raised: int = 0


class InMemoryExecutor(Executor):
    """Run every task inline in this thread and record it; fail chosen tasks on demand.

    Parameters
    ----------
    max_workers:
        Accepted and ignored (``plan.run(max_workers=...)`` passes it).
    failures:
        Task name -> exception (instance or class) its step raises on every attempt; use
        :meth:`fail` to fail only the first attempts.
    gpus:
        GPUs to declare in ``capabilities`` (the double runs GPU steps inline on the CPU, which
        only makes sense in tests of placement logic).

    Attributes
    ----------
    submitted:
        Names of the submitted tasks, in order.
    results:
        The ``TaskResult`` reported for each, in order.
    flushes, starts, shutdowns:
        How many times ``flush``, ``start`` and ``shutdown`` were called.
    """

    name = "in-memory"
    capabilities = Capabilities(shares_memory=True)

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        failures: dict[str, BaseException | type[BaseException]] | None = None,
        gpus: int = 0,
    ) -> None:
        self.submitted: list[str] = []
        self.results: list[TaskResult] = []
        self.flushes = 0
        self.starts = 0
        self.shutdowns = 0
        self._store: ArtifactStore | None = None
        self._resolve: Callable[[Any], Any] | None = None
        self._failures: dict[str, _Failure] = {}
        self._lock = threading.Lock()
        for name, error in (failures or {}).items():
            self.fail(name, error)
        if gpus:
            self.capabilities = Capabilities(shares_memory=True, gpus=gpus)

    def fail(
        self,
        name: str,
        error: BaseException | type[BaseException] = RuntimeError,
        *,
        times: int | None = None,
    ) -> None:
        """Make the step of task ``name`` raise ``error`` on its first ``times`` attempts.

        ``times=None`` fails every attempt. An exception class is instantiated with a message
        naming the task.
        """
        self._failures[name] = _Failure(error, times)

    def start(self, store: ArtifactStore) -> None:
        self.starts += 1
        self._store = store
        self._resolve = local_resolver(store)

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        with self._lock:
            self.submitted.append(task.name)
        if task.step.hints.gpus > self.capabilities.gpus:
            raise ExecutorError(
                f"Step {task.name!r} asks for resources={dict(task.step.hints.resources)}, "
                f"but the {self.name!r} executor declares {self.capabilities.gpus} GPU(s). "
                f"Build it with InMemoryExecutor(gpus=...) or drop the resources hint.",
                executor=self.name,
                step=task.name,
            )
        failure = self._failures.get(task.name)
        if failure is not None:
            task = replace(task, step=_failing_step(task.step, task.name, failure))
        result = execute(task, self._store, self._resolve)
        with self._lock:
            self.results.append(result)
        on_done(result)

    def flush(self) -> None:
        self.flushes += 1

    def shutdown(self) -> None:
        self.shutdowns += 1


def _failing_step(step: Step[Any, Any], name: str, failure: _Failure) -> Step[Any, Any]:
    """The same step (identity, hints, signature) whose function raises the injected error."""
    original = step.fn

    @functools.wraps(original)
    def failing(*args: Any, **kwargs: Any) -> Any:
        if failure.times is None or failure.raised < failure.times:
            failure.raised += 1
            error = failure.error
            if isinstance(error, type):
                raise error(f"injected failure of step {name!r} (InMemoryExecutor.fail)")
            raise error
        return original(*args, **kwargs)

    hints = step.hints
    return Step(
        failing,
        version=step.identity.version,
        cache=step.identity.cache,
        serializer=step.identity.serializer,
        name=step.identity.name,
        retries=hints.retries,
        retry_delay=hints.retry_delay,
        timeout=hints.timeout,
        resources=dict(hints.resources),
    )
