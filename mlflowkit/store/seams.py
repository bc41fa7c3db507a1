"""The seams of a store, as the layers above it (the registry, governance, plugins) reach them.

Layer 3: contracts only. A store made of seams (``mk.Store``) exposes them as ``store.seams``;
code that needs more than the :class:`~mlflowkit.store.base.ArtifactStore` contract (the
registry numbers versions in the index and journals them as files) asks for them by this
contract (``isinstance(store, HasSeams)``), never by probing a store's private attributes.

Invariants:

* ``seams.index()`` is the store's index, opened (and rebuilt from the files) on first use, and
  opened again when its backing database was replaced; every finished write is in it.
* ``seams.objects`` is the store's files; every path is ``f"{seams.objects.root}/<name>"``.
* ``seams.guard`` signs this process's writes and judges what it reads (``store._trust``); a
  registry record is sealed and judged through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from mlflowkit.store.index import Index
from mlflowkit.store.objects import ObjectStore

__all__ = ["HasSeams", "Seams", "StoreSeams"]


@runtime_checkable
class StoreSeams(Protocol):
    """A store's objects, its index, and its signing guard."""

    #: The store's URL (for messages).
    url: str
    #: The store's files.
    objects: ObjectStore
    #: Whether records written beside the index (the registry's journal) are fsynced at once.
    durable: bool
    #: The store's ``Guard`` (``mlflowkit.store._trust``): keys, policy, audit, signatures.
    guard: Any

    def index(self) -> Index:
        """The store's index (see the module docstring)."""
        ...


@runtime_checkable
class HasSeams(Protocol):
    """A store that exposes its seams (``mk.Store`` does)."""

    @property
    def seams(self) -> StoreSeams:
        """The store's seams."""
        ...


class Seams:
    """A store's seams as plain parts (implements :class:`StoreSeams`; ``mk.Store.seams``)."""

    __slots__ = ("_index", "durable", "guard", "objects", "url")

    def __init__(
        self,
        url: str,
        objects: ObjectStore,
        durable: bool,
        guard: Any,
        index: Callable[[], Index],
    ) -> None:
        self.url = url
        self.objects = objects
        self.durable = durable
        self.guard = guard
        self._index = index

    def index(self) -> Index:
        """The store's index (opened, and rebuilt from the files, on first use)."""
        return self._index()
