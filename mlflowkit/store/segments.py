"""Group commit of small writes: a run's small objects and cache entries in segment files.

Layer 5 (part of the store's implementation). While a run batches (``StoreCore.batched``), an
object whose serializer is safe and whose file is at most ``SMALL_BYTES``, and every cache
entry, are kept in a ``Batch`` instead of becoming a file each. The batch is written as one
*segment* file (``segments/<ab>/<name>.seg``, format in :mod:`mlflowkit.store.formats`) when it
holds ``MAX_RECORDS`` records or ``MAX_BYTES`` bytes, ``COMMIT_DELAY_S`` after its first
record at the latest, at once for a record that came ``COMMIT_DELAY_S`` or more after the one
before it (a step that took that long), when the store syncs (at the end of the run, at
exit), and before a lock it parked is needed again. The segment's records are then found
through the index (``PackedRow``: segment, offset, length, BLAKE3), which every process sharing
the store reads.

Invariants:

* A record is readable by other processes only once its index rows are committed *and* its
  segment file is whole (written under a temporary name, then renamed), in that order; this
  process reads its own pending records from the batch. (When the index cannot be written,
  the segment file is written all the same: the next store object that misses a record reads
  such files into its index.)
* A single-flight lock taken while the batch held the key's entry is released only after the
  segment and its rows are written (``park``), so a process waiting on the key finds the entry
  and does not execute the call again.
* A record is used only after its own BLAKE3 matches; a cache entry also only after its
  segment's TOC checksum matches, and only while the segment's signer may write to the store;
  anything else reads as missing. (An object record proves itself like an object file: its
  header names its address and its payload's BLAKE3. So reading one from a local segment
  skips decoding the TOC.)
* A crash loses at most the batch not yet written, the work of the last ``COMMIT_DELAY_S``
  seconds: those calls execute again on the next run. Nothing is ever half written: a segment
  file is whole or absent, and index rows naming a segment that is not there read as missing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import blake3

from mlflowkit.store.formats import (
    SEGMENT_ENTRY,
    SEGMENT_OBJECT,
    CorruptFile,
    SegmentRecord,
    decode_segment,
    segment_toc_size,
)
from mlflowkit.store.index import ObjectRow, PackedRow

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry
    from mlflowkit.store.objects import ObjectStore

__all__ = [
    "COMMIT_DELAY_S",
    "MAX_BYTES",
    "MAX_RECORDS",
    "SMALL_BYTES",
    "Batch",
    "SegmentReader",
    "places",
    "records_in",
    "records_of",
    "segment_path",
]

#: Objects whose file is at most this many bytes (a page) go into segments while a run batches;
#: bigger ones are worth a file of their own.
SMALL_BYTES = 4096
#: A batch is written at most this many seconds after its first record; a record that comes
#: this long after the one before is written at once. What a crash can lose is the work of
#: the last few hundredths of a second, which runs again.
COMMIT_DELAY_S = 0.02
#: A batch is written once it holds this many records...
MAX_RECORDS = 4096
#: ...or this many bytes.
MAX_BYTES = 16 * 1024 * 1024


def segment_path(root: str, name: str) -> str:
    """The file of segment ``name`` (a 64-hex digest) under a store's ``root``."""
    return f"{root}/segments/{name[:2]}/{name}.seg"


class Batch:
    """Writes kept for one segment: objects and cache entries by name, and parked releases.

    Thread-safe: threads of one run add to it while another thread may be writing it out
    (``take``).
    """

    __slots__ = ("_last", "_lock", "absent", "entries", "nbytes", "objects", "parked", "rows")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: object digest -> its object-file bytes
        self.objects: dict[str, bytes] = {}
        #: the index rows of those objects
        self.rows: list[ObjectRow] = []
        #: cache key -> (entry, its unsigned entry-file bytes)
        self.entries: dict[str, tuple[CacheEntry, bytes]] = {}
        self.nbytes = 0
        #: lock name -> its release, run once the batch holding its entry is written
        self.parked: dict[str, Callable[[], None]] = {}
        self._last = time.monotonic()  # when the last record came (or the batch began)
        #: keys whose cache-entry file was looked for and found missing (none to hide), until
        #: their entry is added (kept when the batch is written: their calls may still run)
        self.absent: set[str] = set()

    def add_object(self, digest: str, data: bytes, row: ObjectRow) -> bool:
        """Keep an object; True when it is to be written now."""
        with self._lock:
            if digest not in self.objects:
                self.objects[digest] = data
                self.rows.append(row)
                self.nbytes += len(data)
            return self._write_now()

    def add_entry(self, entry: CacheEntry, data: bytes) -> bool:
        """Keep a cache entry; True when it is to be written now."""
        with self._lock:
            self.entries[entry.key] = (entry, data)
            self.absent.discard(entry.key)
            self.nbytes += len(data)
            return self._write_now()

    def _write_now(self) -> bool:
        """Whether to write now: the batch is full, or this record came ``COMMIT_DELAY_S``
        or more after the last one (records that come slowly, from steps that take a while,
        gain nothing from waiting and are worth keeping at once)."""
        now = time.monotonic()
        slow, self._last = now - self._last >= COMMIT_DELAY_S, now
        return (
            slow or len(self.objects) + len(self.entries) >= MAX_RECORDS or self.nbytes >= MAX_BYTES
        )

    def park(self, name: str, release: Callable[[], None]) -> None:
        """Keep a lock's release until the batch is written."""
        with self._lock:
            self.parked[name] = release

    def is_parked(self, name: str) -> bool:
        """Whether lock ``name`` waits here for the batch to be written."""
        return name in self.parked

    def empty(self) -> bool:
        """Whether nothing waits to be written or released."""
        return not (self.objects or self.entries or self.parked)

    def take(
        self,
    ) -> tuple[
        dict[str, bytes],
        list[ObjectRow],
        dict[str, tuple[CacheEntry, bytes]],
        dict[str, Callable[[], None]],
    ]:
        """Everything kept so far, leaving the batch empty."""
        with self._lock:
            taken = self.objects, self.rows, self.entries, self.parked
            self.objects, self.rows, self.entries, self.parked = {}, [], {}, {}
            self.nbytes = 0
        return taken

    def give_back(
        self,
        objects: dict[str, bytes],
        rows: list[ObjectRow],
        entries: dict[str, tuple[CacheEntry, bytes]],
        parked: dict[str, Callable[[], None]],
    ) -> None:
        """Put back what ``take`` gave when writing it failed (kept for the next try)."""
        with self._lock:
            self.parked.update(parked)
            for digest, data in objects.items():
                if digest not in self.objects:
                    self.objects[digest] = data
                    self.nbytes += len(data)
            self.rows[:0] = rows
            for key, pair in entries.items():
                self.entries.setdefault(key, pair)
                self.nbytes += len(pair[1])


def records_of(
    objects: dict[str, bytes], entries: dict[str, tuple[CacheEntry, bytes]]
) -> list[tuple[str, str, bytes]]:
    """The records of a segment: ``(kind, name, bytes)``, objects first."""
    out = [(SEGMENT_OBJECT, digest, data) for digest, data in objects.items()]
    out += [(SEGMENT_ENTRY, key, data) for key, (_, data) in entries.items()]
    return out


def places(name: str, toc: list[SegmentRecord]) -> list[PackedRow]:
    """The index rows saying where each record of segment ``name`` (its ``toc``) lives."""
    return [PackedRow(f"{k}:{n}", name, off, length, sum_) for k, n, off, length, sum_ in toc]


def records_in(
    name: str, data: bytes
) -> tuple[list[SegmentRecord], list[tuple[str, str, bytes, PackedRow]]] | None:
    """``(its TOC, the records whose bytes match it: (kind, name, bytes, place))`` of segment
    ``name`` read as ``data``; None when its TOC is damaged."""
    toc, start, _, _ = decode_segment(data)
    if toc is None:
        return None
    good = []
    for place in places(name, toc):
        record = data[start + place.offset : start + place.offset + place.length]
        if len(record) == place.length and blake3.blake3(record).hexdigest() == place.checksum:
            kind, _, rname = place.name.partition(":")
            good.append((kind, rname, record, place))
    return toc, good


class SegmentReader:
    """Reads records of segment files; each TOC read is checked once and kept (the last few).

    ``signer_of(digest, block)`` names the key that signed a TOC (None: no valid signature);
    ``trusts(signer)`` says whether that key may write to the store *now* (asked on every
    read of a cache entry, so a revoked key's entries stop counting at once). Object records
    need no signature: like object files of safe formats, their header names their address
    and their payload's BLAKE3, checked when they are loaded. So on a local disk an object
    record is read with one seek and its TOC is not read at all (unless kept already); a cache
    entry's read checks the TOC, for its signer. Elsewhere (S3) the whole segment is read once
    and kept with its TOC.
    """

    __slots__ = ("_io", "_lock", "_present", "_root", "_seen", "_signer_of", "_trusts")

    _KEEP = 16

    def __init__(
        self,
        io: ObjectStore,
        root: str,
        signer_of: Callable[[bytes, bytes | None], str | None],
        trusts: Callable[[str | None], bool],
    ) -> None:
        self._io = io
        self._root = root
        self._signer_of = signer_of
        self._trusts = trusts
        self._lock = threading.Lock()
        #: segments seen to be there (until ``forget``)
        self._present: set[str] = set()
        #: segment name -> (where its records start, offset -> (length, BLAKE3 hex), its
        #: signer, its bytes when not on a local disk)
        self._seen: OrderedDict[
            str, tuple[int, dict[int, tuple[int, str]], str | None, bytes | None]
        ] = OrderedDict()

    def _load(
        self, name: str
    ) -> tuple[int, dict[int, tuple[int, str]], str | None, bytes | None] | None:
        with self._lock:
            seen = self._seen.get(name)
            if seen is not None:
                self._seen.move_to_end(name)
                return seen
        data = self._io.read(segment_path(self._root, name))
        if data is None:
            self.forget(name)
            return None
        toc, size, block, digest = decode_segment(data)
        if toc is None:
            raise CorruptFile(f"the table of contents of segment {name} is damaged")
        seen = (
            size,
            {r[2]: (r[3], r[4]) for r in toc},
            self._signer_of(digest, block),
            None if self._io.local else data,
        )
        with self._lock:
            self._seen[name] = seen
            while len(self._seen) > self._KEEP:
                self._seen.popitem(last=False)
        return seen

    def read(self, place: PackedRow, *, signed: bool) -> bytes | None:
        """The bytes of the record at ``place``; None when its segment is gone, or (``signed``)
        not signed by a key allowed to write to the store.

        Raises
        ------
        CorruptFile
            The segment's TOC is damaged, does not list the record at that offset with that
            length and BLAKE3 (checked where the TOC is read: see the class docstring), or the
            record's bytes do not hash to it.
        """
        if not signed and self._io.local and place.segment not in self._seen:
            # an object record proves itself: its bytes alone, without decoding the TOC
            # (~0.5 ms for a run's segment); where records start is in the first 8 bytes
            record = self._read_local(place, None)
        else:
            seen = self._load(place.segment)
            if seen is None:
                return None
            start, listed, signer, data = seen
            if signed and not self._trusts(signer):
                return None
            if listed.get(place.offset) != (place.length, place.checksum):
                raise CorruptFile(f"segment {place.segment} does not list it where the index says")
            at = start + place.offset
            record = (
                data[at : at + place.length] if data is not None else self._read_local(place, start)
            )
        if record is None:
            return None
        if len(record) != place.length or blake3.blake3(record).hexdigest() != place.checksum:
            self.forget(place.segment)
            raise CorruptFile(f"its bytes in segment {place.segment} do not match their BLAKE3")
        return record

    def _read_local(self, place: PackedRow, start: int | None) -> bytes | None:
        """The bytes at ``place`` of a segment file read from the disk (None: it is gone), its
        records starting at ``start`` (None: read from the file's first 8 bytes)."""
        got = self._io.read_split(
            segment_path(self._root, place.segment), 8 if start is None else 0
        )
        if got is None:
            self.forget(place.segment)
            return None
        head, f = got
        try:
            if start is None:
                start = segment_toc_size(head)
                if start is None:
                    raise CorruptFile(
                        f"the table of contents of segment {place.segment} is damaged"
                    )
            at = start + place.offset
            if f is None:  # the whole file came as ``head``
                record: bytes = head[at : at + place.length]
            else:
                f.seek(at)
                record = f.read(place.length)
        finally:
            if f is not None:
                f.close()
        with self._lock:
            self._present.add(place.segment)
        return record

    def exists(self, name: str) -> bool:
        """Whether segment ``name`` is there (known without a look once seen)."""
        if name in self._present or name in self._seen:
            return True
        there = self._io.exists(segment_path(self._root, name))
        if there:
            with self._lock:
                self._present.add(name)
        return there

    def forget(self, name: str) -> None:
        """Drop what is kept of segment ``name`` (it was rewritten or removed)."""
        with self._lock:
            self._seen.pop(name, None)
            self._present.discard(name)
