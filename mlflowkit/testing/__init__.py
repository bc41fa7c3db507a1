"""Test helpers for mlflowkit users and executor-plugin authors.

* :class:`InMemoryExecutor` -- a test double executor: runs each task inline, records what it
  was asked to do, and fails tasks on demand.
* :class:`ExecutorContract` -- the executor contract as a pytest test class; subclass it and
  override ``make_executor()`` to check your own executor (needs pytest).
* :class:`InMemoryObjects`, :class:`InMemoryIndex` -- test doubles of the store's two seams
  (its files and its index).
* :class:`ObjectStoreContract`, :class:`IndexContract` -- the two seams' contracts as pytest
  test classes; override ``make_objects()`` / ``make_index()`` to check your own backend.

Importing this package does not import pytest; the contract classes load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.testing._inmemory import InMemoryExecutor
from mlflowkit.testing._inmemory_store import InMemoryIndex, InMemoryObjects

if TYPE_CHECKING:
    from mlflowkit.testing.contract import ExecutorContract as ExecutorContract
    from mlflowkit.testing.store_contract import IndexContract as IndexContract
    from mlflowkit.testing.store_contract import ObjectStoreContract as ObjectStoreContract

__all__ = [
    "ExecutorContract",
    "InMemoryExecutor",
    "InMemoryIndex",
    "InMemoryObjects",
    "IndexContract",
    "ObjectStoreContract",
]


def __getattr__(name: str) -> Any:
    if name == "ExecutorContract":
        from mlflowkit.testing.contract import ExecutorContract

        return ExecutorContract
    if name in ("IndexContract", "ObjectStoreContract"):
        from mlflowkit.testing import store_contract

        return getattr(store_contract, name)
    raise AttributeError(f"module 'mlflowkit.testing' has no attribute {name!r}")
