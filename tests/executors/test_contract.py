"""The shipped executor contract suite, run against every built-in executor and the double."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mlflowkit as mk
from mlflowkit.executors.base import Executor, Task, TaskResult
from mlflowkit.stepcall import execute, local_resolver
from mlflowkit.testing import ExecutorContract, InMemoryExecutor


class TestLocal(ExecutorContract):
    def make_executor(self) -> Executor:
        return mk.executors.get("local")


class TestThreads(ExecutorContract):
    def make_executor(self) -> Executor:
        return mk.executors.get("threads", max_workers=4)


class TestProcesses(ExecutorContract):
    def make_executor(self) -> Executor:
        return mk.executors.get("processes", max_workers=2)


class TestInMemory(ExecutorContract):
    def make_executor(self) -> Executor:
        return InMemoryExecutor()


@pytest.mark.dask
class TestDask(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _address(self, dask_address: str) -> None:
        self.address = dask_address

    def make_executor(self) -> Executor:
        return mk.executors.get("dask", address=self.address)


class MinimalExecutor(Executor):
    """The least a plugin implements: ``submit`` (the default ``start`` keeps the store)."""

    name = "minimal"

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        on_done(execute(task, self.store, local_resolver(self.store)))


class TestMinimal(ExecutorContract):
    def make_executor(self) -> Executor:
        return MinimalExecutor()
