"""Test-only executor plugins: the in-memory double, registered as ``echo-plugin``, and
``minimal-plugin``, which implements nothing but ``submit``.

It also declares a broken entry point, ``not-an-executor``, which names a class that is not
an ``mk.Executor``; mlflowkit must refuse to load it with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable

import mlflowkit as mk
from mlflowkit.executors import Task, TaskResult
from mlflowkit.stepcall import execute, local_resolver
from mlflowkit.testing import InMemoryExecutor


class EchoExecutor(InMemoryExecutor):
    """Runs each step inline, like ``local``, and records what it ran."""

    name = "echo-plugin"


class MinimalExecutor(mk.Executor):
    """The least a plugin implements: ``submit`` (the default ``start`` keeps the store)."""

    name = "minimal-plugin"

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        on_done(execute(task, self.store, local_resolver(self.store)))


class NotAnExecutor:
    """Looks like a plugin, but is not an ``mk.Executor`` subclass."""

    def __init__(self, **options: object) -> None:
        self.options = options
