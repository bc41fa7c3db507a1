"""The index seam: what a store can query fast, and where the registry numbers its records.

Layer 3: a contract only. Implementations: ``SqliteIndex`` (:mod:`mlflowkit.store.sqlite_index`,
the default, one file per store) and the test double ``mlflowkit.testing.InMemoryIndex``; a
PostgreSQL index implements the same protocol. Every implementation runs the contract suite
``mlflowkit.testing.IndexContract``. No SQL (nor any other query language) crosses this seam:
callers speak in rows and records.

Two kinds of rows live in an index:

* a **cache of the store's files**: objects, cache entries and run records (with their steps,
  for lineage), and where each record of a segment file lives (``PackedRow``). The files are
  the truth: these rows can be dropped and rebuilt at any time (``rebuild``), and run rows are
  re-synced from a listing of the run files (``sync_runs``).
* the **registry**: artifact versions, promotions and stage pointers. These are not a cache:
  ``rebuild(clear=True)`` and a schema change keep them. Each row carries its signed
  ``record`` (the registry believes only that; see ``mlflowkit.registry.signed``).

Invariants every implementation keeps (the contract suite checks each):

* Every write is all or nothing, and concurrent writers (threads, processes, machines where
  the backend is shared) wait for each other rather than fail or interleave.
* ``registry(fn)`` runs ``fn`` in one exclusive transaction: what ``fn`` reads through its
  :class:`RegistryTransaction` is what it changes; when ``fn`` raises, nothing it wrote stays.
  ``fn`` may be run again when the backend asks for a retry (a busy or serialization error), so
  its side effects outside the index must be idempotent.
* ``insert_version`` / ``insert_promotion`` with a given number are *insert if absent*: a number
  already taken is refused (False / None), never overwritten. ``insert_promotion`` without a
  number takes the next one, higher than any given before.
* Registry reads never create anything (an index without registry rows reads as empty).
* ``run_records`` and ``run_ids`` are newest first (``started_at``, then id, descending).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry, RunRecord

__all__ = [
    "Index",
    "ObjectRow",
    "PackedRow",
    "PromotionRow",
    "RegistryReader",
    "RegistryTransaction",
    "RunFile",
    "StageRow",
    "VersionRow",
]

_T = TypeVar("_T")


class ObjectRow(NamedTuple):
    """An object as the index knows it: digest, file size, serializer, creation time."""

    digest: str
    size: int
    serializer: str
    created_at: float


class PackedRow(NamedTuple):
    """Where a record of a segment file lives: ``name`` is ``"o:<digest>"`` for an object,
    ``"c:<key>"`` for a cache entry; ``offset`` counts from the end of the segment's TOC and
    ``checksum`` is the record's BLAKE3 (hex), as the signed TOC lists it."""

    name: str
    segment: str
    offset: int
    length: int
    checksum: str


class RunFile(NamedTuple):
    """A run record file as listed: id, size and a change fingerprint."""

    run_id: str
    size: int
    stamp: str


class VersionRow(NamedTuple):
    """A version of a named artifact as stored: its columns, and its sealed ``record``."""

    name: str
    version: int
    digest: str
    run_id: str | None
    created_at: str
    created_by: str | None
    metadata: str
    record: bytes | None


class PromotionRow(NamedTuple):
    """A promotion as stored; ``seq`` orders the promotions (None: numbered on insert)."""

    seq: int | None
    name: str
    version: int
    from_stage: str | None
    to_stage: str
    at: str
    by: str | None
    reason: str
    gates: str
    record: bytes | None


class StageRow(NamedTuple):
    """A stage pointer as stored (written for convenience; readers replay promotions)."""

    name: str
    stage: str
    version: int


class RegistryReader(Protocol):
    """Reads of the registry's rows (never creating anything)."""

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        """The version rows of ``name`` (every name when None), by name, then version."""
        ...

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        """The promotion rows of ``name`` (every name when None), by ``seq``."""
        ...

    def stage_rows(self) -> list[StageRow]:
        """Every stage pointer, by name, then stage."""
        ...


class RegistryTransaction(RegistryReader, Protocol):
    """The registry inside one exclusive transaction (see :meth:`Index.registry`)."""

    def insert_version(self, row: VersionRow) -> bool:
        """Add ``row`` unless ``(name, version)`` is taken; True when added."""
        ...

    def update_version(self, name: str, version: int, created_by: str, record: bytes) -> None:
        """Replace the signer and sealed record of one version row."""
        ...

    def insert_promotion(self, row: PromotionRow) -> int | None:
        """Add ``row``; its ``seq`` (the next number when ``row.seq`` is None).

        None when ``row.seq`` is given and already taken (nothing is written).
        """
        ...

    def update_promotion(self, seq: int, by: str, record: bytes) -> None:
        """Replace the signer and sealed record of one promotion row."""
        ...

    def set_stage(self, name: str, stage: str, version: int) -> None:
        """Point ``stage`` of ``name`` at ``version``."""
        ...


@runtime_checkable
class Index(RegistryReader, Protocol):
    """The index of one store (see the module docstring)."""

    # lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release connections of this process (they reopen on demand)."""
        ...

    def replaced(self) -> bool:
        """Whether the backing database was deleted or replaced since it was opened here."""
        ...

    def is_built(self) -> bool:
        """Whether a full rebuild from the files has completed for this index."""
        ...

    def rebuild(
        self,
        objects: Iterable[ObjectRow],
        caches: Iterable[tuple[CacheEntry, int]],
        runs: Iterable[tuple[RunFile, str]],
        *,
        clear: bool,
        packed: Iterable[PackedRow] = (),
    ) -> None:
        """Fill the cache rows from a scan of the files and mark the index built.

        ``caches``: entries with their file size; ``runs``: run files with their JSON text.
        ``clear`` deletes the cache rows first (the registry's are kept); otherwise rows are
        upserted, so a concurrent writer's rows are never lost.
        """
        ...

    # objects and cache entries ----------------------------------------------------------------
    def add_batch(
        self,
        objects: Sequence[ObjectRow],
        caches: Sequence[tuple[CacheEntry, int]],
        packed: Sequence[PackedRow] = (),
    ) -> None:
        """Record many objects, cache entries (with their file sizes) and the places of
        segment records in one transaction."""
        ...

    def find_packed(self, name: str) -> PackedRow | None:
        """Where the segment record ``name`` (``"o:<digest>"``, ``"c:<key>"``) lives, if any."""
        ...

    def find_packed_many(self, names: Sequence[str]) -> dict[str, PackedRow]:
        """Where each of the segment records ``names`` that some segment holds lives."""
        ...

    def packed_segments(self) -> set[str]:
        """The names of the segments some record's place points into."""
        ...

    def remove_objects(self, digests: Iterable[str]) -> None:
        """Forget objects (deleted or quarantined), with their segment records' places."""
        ...

    def remove_cache(self, keys: Iterable[str]) -> None:
        """Forget cache entries, with their segment records' places."""
        ...

    def cache_keys_for(self, digest: str) -> list[str]:
        """Keys of the cache entries whose output is ``digest``."""
        ...

    # runs and lineage -------------------------------------------------------------------------
    def sync_runs(self, listed: Iterable[RunFile], read: Callable[[str], str | None]) -> None:
        """Bring the run rows in line with a listing of the run files.

        New or changed files (size or stamp) are read with ``read(run_id)`` (None: gone, or
        unreadable: skipped); rows whose file is not listed are deleted.
        """
        ...

    def run_records(self, run_ids: Iterable[str] | None = None) -> list[RunRecord]:
        """Run records, newest first (all of them, or those with the given ids)."""
        ...

    def run_ids(self, prefix: str = "") -> list[str]:
        """Ids of the runs starting with ``prefix`` (case-sensitive), newest first."""
        ...

    def upstream_runs(self, digest: str) -> set[str]:
        """Ids of the runs holding a step run upstream of ``digest`` (transitively)."""
        ...

    def digests_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Known digests (objects and step outputs) starting with ``prefix``, sorted."""
        ...

    # the registry -----------------------------------------------------------------------------
    def registry(self, fn: Callable[[RegistryTransaction], _T]) -> _T:
        """Run ``fn`` in one exclusive transaction on the registry's rows; its result."""
        ...

    def published_digests(self) -> list[str]:
        """The digest of every version row (gc keeps them); empty without a registry."""
        ...
