"""A pass-through executor for tests: it keeps every result its inner executor reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflowkit.executors.base import Executor, Task, TaskResult


class Recorder(Executor):
    """Passes tasks through to ``inner`` and keeps every reported result."""

    name = "recorder"

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.results: dict[str, TaskResult] = {}

    def start(self, store: Any) -> None:
        self.inner.start(store)
        self.capabilities = self.inner.capabilities

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        def done(result: TaskResult) -> None:
            self.results[result.name] = result
            on_done(result)

        self.inner.submit(task, done)

    def flush(self) -> None:
        self.inner.flush()

    def finish(self, *, interrupted: bool = False) -> None:
        self.inner.finish(interrupted=interrupted)
