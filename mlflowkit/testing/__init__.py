"""Test helpers for mlflowkit users and executor-plugin authors.

* :class:`InMemoryExecutor` -- a test double executor: runs each task inline, records what it
  was asked to do, and fails tasks on demand.
* :class:`ExecutorContract` -- the executor contract as a pytest test class; subclass it and
  override ``make_executor()`` to check your own executor (needs pytest).

Importing this package does not import pytest; ``ExecutorContract`` loads it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.testing._inmemory import InMemoryExecutor

if TYPE_CHECKING:
    from mlflowkit.testing.contract import ExecutorContract as ExecutorContract

__all__ = ["ExecutorContract", "InMemoryExecutor"]


def __getattr__(name: str) -> Any:
    if name == "ExecutorContract":
        from mlflowkit.testing.contract import ExecutorContract

        return ExecutorContract
    raise AttributeError(f"module 'mlflowkit.testing' has no attribute {name!r}")
