"""``IndexKeeper``: a store's index, opened on first use and fed its rows by group commit.

Layer 5 (part of the store's implementation); it sees the index only through the index seam
(:class:`mlflowkit.store.index.Index`), so any implementation of it plugs in.

Invariants:

* The index is opened on first use, and rebuilt from the files (``scan``) when it was never
  built; one that was replaced underneath (a local file deleted or swapped) is opened again
  when asked for ``fresh``.
* Rows of new objects and cache entries are buffered (``note``) and written in one
  transaction: at the next query (``index()`` flushes first, so every query sees every
  finished write), at ``flush()``, or by the store's background sync. A failed flush keeps
  its rows for the next one; the files stay the truth either way.
* One index object per keeper at a time; the last one is closed when the keeper is closed or
  garbage collected (not at interpreter exit: the store closes it there, in order).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflowkit.store.index import Index, ObjectRow, PackedRow, RunFile

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry

__all__ = ["IndexKeeper", "Scan"]

#: What a scan of a store's files found: objects, cache entries with their file sizes, and
#: run files with their JSON text.
Scan = tuple[
    list[ObjectRow], list[tuple["CacheEntry", int]], list[tuple[RunFile, str]], list[PackedRow]
]


class IndexKeeper:
    """Keeps one store's index (see the module docstring).

    Parameters
    ----------
    open_index:
        Opens the store's index (called on first use and after it was replaced).
    scan:
        Reads the store's files into rows, to rebuild an index from.
    """

    __slots__ = (
        "__weakref__",
        "_finalizer",
        "_index",
        "_lock",
        "_open_index",
        "_pending_cache",
        "_pending_lock",
        "_pending_objects",
        "_pending_packed",
        "_scan",
    )

    def __init__(self, open_index: Callable[[], Index], scan: Callable[[], Scan]) -> None:
        self._open_index = open_index
        self._scan = scan
        self._index: Index | None = None
        self._lock = threading.Lock()
        self._pending_objects: list[ObjectRow] = []
        self._pending_cache: list[tuple[CacheEntry, int]] = []
        self._pending_packed: list[PackedRow] = []
        self._pending_lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def note(self, objects: ObjectRow | None, cache: tuple[CacheEntry, int] | None) -> None:
        """Buffer the row of a finished write (written at the next flush)."""
        with self._pending_lock:
            if objects is not None:
                self._pending_objects.append(objects)
            if cache is not None:
                self._pending_cache.append(cache)

    def note_many(
        self,
        objects: list[ObjectRow],
        caches: list[tuple[CacheEntry, int]],
        packed: list[PackedRow],
    ) -> None:
        """Buffer the rows of a written segment (its objects, entries and records' places)."""
        with self._pending_lock:
            self._pending_objects.extend(objects)
            self._pending_cache.extend(caches)
            self._pending_packed.extend(packed)

    def flush(self) -> None:
        """Write the buffered rows in one transaction (kept for the next flush if it fails)."""
        with self._pending_lock:
            objects, self._pending_objects = self._pending_objects, []
            caches, self._pending_cache = self._pending_cache, []
            packed, self._pending_packed = self._pending_packed, []
        if objects or caches or packed:
            try:
                self.index(flush=False).add_batch(objects, caches, packed)
            except BaseException:
                with self._pending_lock:
                    self._pending_objects[:0] = objects
                    self._pending_cache[:0] = caches
                    self._pending_packed[:0] = packed
                raise

    def index(self, *, fresh: bool = False, flush: bool = True) -> Index:
        """The index, opened (and rebuilt from the files) on first use or when replaced.

        ``flush``: write buffered rows first, so the caller's queries see every finished write.
        ``fresh``: open the index again when its database was replaced since it was opened.
        """
        if flush and (self._pending_objects or self._pending_cache or self._pending_packed):
            self.flush()
        idx = self._index
        if idx is not None and not (fresh and idx.replaced()):
            return idx
        with self._lock:
            if self._index is not None and self._index is not idx:
                return self._index
            if idx is not None:
                idx.close()
            idx = self._open_index()
            if not idx.is_built():
                objects, caches, runs, packed = self._scan()
                idx.rebuild(objects, caches, runs, clear=False, packed=packed)
            self._index = idx
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, idx.close)
            self._finalizer.atexit = False  # at exit, the store closes it in order
        return idx

    def rebuild(self) -> dict[str, int]:
        """Rebuild the index from the files (clearing the cache rows); counts found."""
        idx = self.index(fresh=True)
        objects, caches, runs, packed = self._scan()
        idx.rebuild(objects, caches, runs, clear=True, packed=packed)
        return {"objects": len(objects), "cache": len(caches), "runs": len(runs)}

    def close(self) -> None:
        """Close the index (it reopens on demand)."""
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
