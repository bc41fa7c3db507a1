"""The ``local`` executor: runs each task inline, in the calling thread.

Invariant: ``submit`` runs the task to completion before returning and reports its result
through ``on_done`` (which only enqueues), so the scheduler's state is never re-entered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflowkit.executors.base import Capabilities, Executor, Task, TaskResult
from mlflowkit.executors.limits import refuse_gpu
from mlflowkit.stepcall import execute, local_resolver

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """Run every step in this process and thread, one at a time."""

    name = "local"
    capabilities = Capabilities(shares_memory=True, inline=True, ordered=True)

    def __init__(self, max_workers: int | None = None) -> None:
        self._store: ArtifactStore | None = None
        self._resolve: Callable[[Any], Any] | None = None

    def start(self, store: ArtifactStore) -> None:
        self._store = store
        self._resolve = local_resolver(store)

    def finish(self, *, interrupted: bool = False) -> None:
        self._resolve = None  # the values it loaded for the run

    def run_here(self, task: Task) -> TaskResult:
        if task.step.hints.gpus:
            refuse_gpu(task, self.name)
        return execute(task, self._store, self._resolve)

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        on_done(self.run_here(task))
