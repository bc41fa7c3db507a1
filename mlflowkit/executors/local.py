"""The ``local`` executor: runs each task inline, in the calling thread.

Invariant: ``submit`` runs the task to completion before returning and reports its result
through ``on_done`` (which only enqueues), so the scheduler's state is never re-entered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflowkit.executors.base import DONE, Capabilities, Executor, Task, TaskHandle, TaskResult
from mlflowkit.stepcall import execute, local_resolver

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """Run every step in this process and thread, one at a time."""

    name = "local"
    capabilities = Capabilities(shares_memory=True)

    def __init__(self, max_workers: int | None = None) -> None:
        self._store: ArtifactStore | None = None
        self._resolve: Callable[[Any], Any] | None = None

    def start(self, store: ArtifactStore) -> None:
        self._store = store
        self._resolve = local_resolver(store)

    def finish(self) -> None:
        self._resolve = None  # the values it loaded for the run

    def run_here(self, task: Task) -> TaskResult:
        if task.step.hints.gpus:
            _refuse_gpu(task, self.name)
        return execute(task, self._store, self._resolve)

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> TaskHandle:
        on_done(self.run_here(task))
        return DONE


def _refuse_gpu(task: Task, executor: str) -> None:
    """A step that asks for a GPU never silently runs on the CPU."""
    if task.step.hints.gpus > 0:
        from mlflowkit.errors import ExecutorError

        raise ExecutorError(
            f"Step {task.name!r} asks for resources={dict(task.step.hints.resources)}, but the "
            f"{executor!r} executor has no GPU. Run it with executor='gpu' (pip install "
            f"'mlflowkit[gpu]' on a machine with a CUDA GPU) or a Dask cluster whose workers "
            f"have a GPU resource; or drop the resources hint.",
            executor=executor,
            step=task.name,
        )
