"""The artifact-store contract the cache, the scheduler and the executors talk to.

Layer 3: contracts only, no implementation. ``mlflowkit.store.fsspec.Store`` implements it.
The store's own two seams (its files, its index) have contracts of their own:
:mod:`mlflowkit.store.objects`, :mod:`mlflowkit.store.index` and :mod:`mlflowkit.store.seams`.

Invariants every implementation keeps:

* Objects are addressed by the *content digest* of the value (``mk.hash_value``); ``put`` is
  idempotent and atomic: a reader sees either nothing or the whole object, never part of one.
* ``get`` verifies the object's bytes before deserializing, and that the object is the one
  asked for (not another object's file under its name); a corrupt object is set aside, its
  cache entries dropped, and ``CorruptObjectError`` raised. It is never returned.
* Cache entries map a step call's key to its output digest. ``get_cache`` returns ``None`` for a
  missing entry, and for an entry whose stored object is missing (so the step re-executes).
  ``get_cache_many`` answers as ``get_cache`` does for each key (hits only, by key).
* The files under the store URL are the source of truth; any local index can be rebuilt.
* A *pack* is only a faster way to read many cache entries at once: every entry in it was true
  when it was written, and its reader (``mlflowkit.cache.Cache``) still checks what it relies
  on. A store without packs subclasses ``ArtifactStore`` and inherits the defaults below
  (``read_pack`` finds nothing, ``write_pack`` keeps nothing, ``get_cache_many`` asks
  ``get_cache`` key by key): runs then read entry by entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import networkx as nx

    from mlflowkit.records import CacheEntry, RunRecord

__all__ = ["ArtifactStore"]


@runtime_checkable
class ArtifactStore(Protocol):
    """What the rest of mlflowkit needs from a store."""

    url: str

    def exists(self) -> bool:
        """Whether a store is at ``url`` yet (one not created yet has no runs to read)."""
        ...

    def create(self) -> None:
        """Lay the store out unless it is there (idempotent): a run calls it before its first
        write, so errors about the place (not writable, a shared index unreachable) come
        before any work. A store with nothing to lay out inherits this default."""

    # objects -------------------------------------------------------------------------------
    def has(self, digest: str) -> bool:
        """Whether an object with this content digest is stored."""
        ...

    def get(self, digest: str) -> Any:
        """Load, verify and deserialize the object with this digest."""
        ...

    def put(self, value: Any, digest: str | None = None, *, serializer: str | None = None) -> str:
        """Store ``value`` (atomically, once) and return its content digest.

        ``digest`` may be given when the caller already hashed the value.
        """
        ...

    # cache ---------------------------------------------------------------------------------
    def get_cache(self, key: str) -> CacheEntry | None:
        """The cache entry for ``key``, or None (missing, corrupt, or its object is gone)."""
        ...

    def get_cache_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        """The entries ``get_cache`` finds for ``keys``, by key (those it finds none for are
        left out): what a run asks for the many calls it may answer at once (a fan-out).

        Same answers as ``get_cache`` key by key, which the default does; an implementation
        reads them in few requests.
        """
        found: dict[str, CacheEntry] = {}
        for key in keys:
            entry = self.get_cache(key)
            if entry is not None:
                found[key] = entry
        return found

    def put_cache(self, entry: CacheEntry) -> None:
        """Record atomically that the call with ``entry.key`` produced ``entry.output_digest``."""
        ...

    def drop_cache(self, key: str) -> None:
        """Forget a cache entry (used when its object turned out corrupt)."""
        ...

    def read_pack(self, name: str) -> dict[str, CacheEntry]:
        """The cache entries of pack ``name`` by key; empty when missing or damaged."""
        return {}

    def write_pack(self, name: str, entries: Iterable[CacheEntry]) -> None:
        """Replace pack ``name`` with ``entries``, atomically (the default keeps nothing)."""
        return None

    def batched(self) -> AbstractContextManager[None]:
        """Group the small writes of a ``with`` block into few durable writes (a run's block).

        Writes inside the block are readable at once by this process; by others once the
        batch is written (at the latest when the block ends). A single-flight lock taken in
        the block is released only once the entry written under it is readable by others. The
        default batches nothing.
        """
        return nullcontext()

    def lock(self, key: str, timeout: float = ...) -> AbstractContextManager[bool]:
        """A bounded single-flight lock on a key; yields True when acquired.

        A holder that crashed cannot wedge it: a lock older than its lease is broken.
        """
        ...

    # runs and lineage ----------------------------------------------------------------------
    def put_run(self, record: RunRecord) -> None:
        """Write (or overwrite) a run record atomically."""
        ...

    def runs(self) -> list[RunRecord]:
        """All run records, newest first."""
        ...

    def run(self, run_id: str) -> RunRecord:
        """One run record (a unique prefix of the id is enough)."""
        ...

    def lineage(self, digest: str) -> nx.DiGraph:
        """Artifacts, step runs and runs upstream of ``digest``, across runs."""
        ...

    def verify(self) -> list[str]:
        """Re-hash every stored object; return (and set aside) the corrupt ones."""
        ...

    def gc(
        self,
        *,
        keep_last: int = ...,
        pins: Iterable[str] | None = None,
        older_than: float | None = None,
        dry_run: bool = ...,
    ) -> Any:
        """Delete what neither recent runs nor pins reference."""
        ...

    def sync(self) -> None:
        """Make every write so far durable and visible to index queries."""
        ...

    def du(self) -> dict[str, Any]:
        """Disk usage summary."""
        ...
