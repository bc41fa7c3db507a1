"""``StoreCore``: the artifact store made of its two seams, objects and index.

Layer 5. It works on the store's files through an :class:`~mlflowkit.store.objects.ObjectStore`
(``LocalFiles`` for a folder, ``FsspecFiles`` for any fsspec URL), keeps its index through the
index seam (``SqliteIndex`` by default, kept by an ``IndexKeeper``), and signs and judges
through its ``Guard`` (``_trust``). The public ``mk.Store`` (:mod:`mlflowkit.store.fsspec`,
layer 6) adds lineage, metrics, the registry and governance on top. Where each file lives:
:mod:`mlflowkit.store.layout`; their formats: :mod:`mlflowkit.store.formats`.

Invariants:

* Objects are addressed by the content digest of their value (``hash_value``); ``put`` skips
  digests already present and writes atomically (the objects seam), so a reader sees a whole
  object or none.
* ``get`` checks the header and the payload's BLAKE3 *before* deserializing. A mismatch moves
  the object to ``quarantine/``, drops the cache entries pointing at it and raises
  :class:`~mlflowkit.errors.CorruptObjectError`: a corrupt object is never returned.
* A cache entry carries the BLAKE3 of its own JSON; a corrupt entry reads as missing (and is
  removed), and so does an entry whose stored object is gone.
  ``get_cache_many`` answers as ``get_cache`` does for each key, in bulk (``_bulk``).
* An object's header names the digest it is stored under; ``get`` compares it with the digest
  asked for (one string compare), so a file copied over another object's is corrupt, never a
  hit. ``verify`` also re-hashes each value and compares it with its name.
* Objects whose serializer can run code (pickle, plugins) carry the writer's signature in
  their header and are deserialized only after it verifies by a key allowed to write here;
  cache entries and packs are signed too and read as missing otherwise. ``policy/`` holds the
  signed policy chain and ``audit/`` the signed audit chain (see ``_trust``).
* The files are the truth; the index is rebuilt from them when missing or replaced, and
  run rows are re-synced from a listing of ``runs/`` before every query. A store that cannot
  be written (a read-only folder) is read through a private copy of its index.
* Creating is explicit: constructing a ``Store`` touches nothing. The folders and the marker
  are made by ``create()`` (a run calls it first) or by the first write. Reading
  (``runs``, ``run``, ``lineage``, ``du``) never creates or deletes anything, and on a path
  that is not a store raises ``StoreError``. A folder is a store when it holds the marker, or
  the ``objects/``, ``cache/`` and ``runs/`` folders every earlier version made (such a store
  is adopted: the marker is written the first time it is written to).
* A store deletes only what it can tell it wrote: names of its own shapes (``TEMP_NAME`` in
  ``tmp/``, digests under ``objects/``, keys under ``cache/``, ...), in its own folders, never
  through a symbolic link to a folder elsewhere, and only once the folder is known to be a
  store.
* A running record names its owner (host, boot, pid, start time); once that process is
  provably gone, the run reads as ``interrupted`` and its temp files are swept at once.
* Durability is a group commit. Every write is atomic at once (temp file + rename), so a
  crashed or killed process never leaves a half-written file behind a real name. With
  ``durable=True`` (the default) the data reaches stable storage in batches: a background
  flush within ``sync_interval`` seconds of a write and at interpreter exit, and ``sync()``
  returns only once everything written so far is on disk. A power failure inside
  that window can lose the newest files but never makes a wrong one readable: every object
  and cache entry carries a checksum that is verified on read. With ``durable=False`` nothing
  is fsynced. Index rows are buffered likewise (``indexer``); the files stay the truth.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import blake3

from mlflowkit.errors import (
    CorruptObjectError,
    HashingError,
    MissingObjectError,
    StoreError,
)
from mlflowkit.records import CacheEntry, RunRecord
from mlflowkit.store import serializers
from mlflowkit.store._bulk import cache_entries
from mlflowkit.store._flush import FLUSHER
from mlflowkit.store._trust import SAFE_SERIALIZERS, Guard
from mlflowkit.store.choice import index_opener, shared_index_url
from mlflowkit.store.filesystems import TEMP_NAME, open_files, temp_owner_dead
from mlflowkit.store.formats import (
    HEAD_MAX,
    CorruptFile,
    decode_entry_signed,
    decode_pack_signed,
    decode_segment,
    encode_entry,
    encode_pack,
    encode_segment,
    pack_header,
    parse_header,
    payload_blake3,
    segment_toc,
    sign_run_parts,
)
from mlflowkit.store.index import Index, ObjectRow, PackedRow, RunFile
from mlflowkit.store.indexer import IndexKeeper, Scan
from mlflowkit.store.layout import (
    DEFAULT_LOCK_TIMEOUT_S,
    DEFAULT_URL,
    LEGACY_AREAS,
    LOCK_NAME,
    MARKER,
    NAME,
    TMP_MAX_AGE_S,
    check_format,
    check_name,
    no_store,
    prepare_layout,
)
from mlflowkit.store.locks import DEFAULT_LEASE_S, hold
from mlflowkit.store.maintenance import (
    disk_usage,
    read_segment,
    record_findings,
    rows_of_segment,
    scan_files,
    segment_files,
    verify_objects,
    verify_segments,
)
from mlflowkit.store.objects import FileStat, ObjectStore
from mlflowkit.store.runfiles import RunFiles, as_read, executed
from mlflowkit.store.seams import Seams
from mlflowkit.store.segments import (
    COMMIT_DELAY_S,
    SMALL_BYTES,
    Batch,
    SegmentReader,
    places,
    records_in,
    records_of,
    segment_path,
)

__all__ = ["ObjectInfo", "StoreCore"]

#: Types whose values a batch keeps in a segment without looking for a file of theirs first
_SMALL_SCALARS = frozenset({type(None), bool, int, float})

if TYPE_CHECKING:
    from mlflowkit.store._gc import GcReport  # loaded by gc(): not on a run's path


class _Committer:
    """What the flusher calls to write a store's batch (its ``sync`` also fsyncs, later)."""

    __slots__ = ("__weakref__", "_store")

    def __init__(self, store: StoreCore) -> None:
        self._store = weakref.ref(store)

    def sync(self) -> None:
        store = self._store()
        if store is not None:
            store.write_batch()


class ObjectInfo(NamedTuple):
    """What an object's header says, read without loading the payload."""

    digest: str
    serializer: str
    size: int
    payload_size: int
    payload_blake3: str


class StoreCore:
    """The artifact store on its seams: objects, cache entries, run records, locks.

    Parameters
    ----------
    url:
        A local folder, ``file://`` URL or any fsspec URL (``memory://x``, ``s3://bucket/p``).
        Default: ``$MLFLOWKIT_STORE``, else ``./.mlflowkit`` (made absolute at construction).
    index:
        Where runs, cache entries, versions, stages and the audit are indexed: None (default)
        for SQLite, beside a local store's files (for a remote store, in a local cache folder);
        or a PostgreSQL URL (``postgresql://user@host:port/database``) shared by every machine
        of a team. The password goes in ``PGPASSWORD`` or ``~/.pgpass`` (libpq's conventions),
        not in code; it is never shown in a message.
    durable:
        Flush written files to stable storage on local disks (default), as a group commit:
        in the background within ``sync_interval`` seconds and at interpreter exit, and at
        once on ``sync()``. ``False`` never flushes: writes stay atomic and verified, but a power
        failure may lose the most recent ones; for throwaway stores.
    sync_interval:
        Seconds between a write and its background flush (index rows and, if durable, data).
    lock_lease:
        Seconds a single-flight lock *file* stays valid without its holder's heartbeat (stores
        that lock with files: remote ones with their own SQLite index, and local ones where
        the platform has no POSIX record locks).
    key:
        The signing key of this process's writes: a key name (in the keys folder) or the path
        of a ``.key`` file. Default: ``$MLFLOWKIT_KEY``, else the key ``default`` (made on
        first use). See :mod:`mlflowkit.store._trust`.
    **storage_options:
        Passed to the fsspec filesystem (credentials, endpoint, ...).
    """

    url: str

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        index: str | None = None,
        durable: bool = True,
        lock_lease: float = DEFAULT_LEASE_S,
        sync_interval: float = 1.0,
        key: str | os.PathLike[str] | None = None,
        **storage_options: Any,
    ) -> None:
        if url is None:
            url = os.environ.get("MLFLOWKIT_STORE") or DEFAULT_URL
        files, self.url, protocol = open_files(os.fspath(url), storage_options)
        #: the index database shared by every machine (``postgresql://…``), or None for the
        #: SQLite index of this store (beside a local store's files, else in a cache folder)
        self.index_url = shared_index_url(index, self.url)
        self.durable = durable
        self.lock_lease = lock_lease
        self.sync_interval = sync_interval
        self._dirty = False  # written since the last sync, on a disk that needs flushing
        self._dirty_lock = threading.Lock()
        self._storage_options = storage_options
        self._io: ObjectStore = files
        self.root = root = files.root
        local_root = root if self._io.local else None
        opener, self._locks = index_opener(self.index_url, self.url, local_root, protocol)
        self._indexes = IndexKeeper(opener, self._scan)
        self._runs = RunFiles(self._io, self.url)
        self._ready = False  # laid out (folders and marker) by this object
        self._known = False  # seen to be a store
        self._key = key
        self._guard = Guard(self._io, self.url, self._ensure, key)
        #: small writes kept for one segment while a run batches (``batched``), else None
        self._batch: Batch | None = None
        self._batch_depth = 0
        self._batch_guard = threading.Lock()
        #: held while a batch is written: ``write_batch`` returns only once every record kept
        #: before it was called is written, by this thread or by one that took it first
        self._batch_writing = threading.Lock()
        self._segments = SegmentReader(
            self._io,
            root,
            lambda digest, block: self._guard.document_signer("segment", digest, block),
            self._guard.trusts,
        )
        self._committer = _Committer(self)
        self._reconciled = False  # segment files unknown to the index were looked for
        #: digest -> the segment holding it, learned in bulk (``_learn_places``)
        self._held_in: dict[str, str] = {}
        #: the stored values of the packs read, not asked about yet (see ``has``)
        self._unlearned: list[str] = []
        self._asked = 0  # ``has`` calls that needed the index
        _OPEN_STORES.add(self)

    # creating --------------------------------------------------------------------------------
    def create(self) -> None:
        """Lay out the store (its folders and marker) unless it is there; idempotent.

        Runs call it first; the first write through this object does too. Stale temp files
        (and those of writers that provably died) are swept the first time a process lays
        out a local store.

        Raises
        ------
        StoreError
            The folder cannot be created or written (the message says why).
        """
        if not self._known:  # a store of a newer mlflowkit: refused before anything is touched
            check_format(self._io.read(f"{self.root}/{MARKER}"), self.url)
        try:
            if self._io.local:
                if prepare_layout(self.root, self._io, self._guard.marker_bytes):
                    self.sweep_tmp()
            elif not self._ready and not self._io.exists(f"{self.root}/{MARKER}"):
                self._io.write_atomic(f"{self.root}/{MARKER}", (self._guard.marker_bytes(),), False)
        except (OSError, StoreError) as exc:
            raise StoreError(
                f"cannot create a store at {self.url}: {exc}. Expected a writable folder "
                "(or a path where one can be created); pass another url or set "
                "$MLFLOWKIT_STORE.",
                url=self.url,
            ) from exc
        self._known = True
        if self._locks is not None:
            self._locks.check()  # a shared index that cannot be used fails here, before any work
        self._guard.check_write()  # AccessDenied before anything is written through this object
        self._ready = True

    def _ensure(self) -> None:
        """Before a write: the store exists (one attribute test once it does)."""
        if not self._ready:
            self.create()

    def exists(self) -> bool:
        """Whether a store is at this url (its marker, or the layout of an earlier version)."""
        if self._known:
            return True
        io, root = self._io, self.root
        marker = io.read(f"{root}/{MARKER}")
        found = marker is not None
        if found:
            check_format(marker, self.url)  # a store of a newer mlflowkit: refused, untouched
        elif io.local:
            found = all(os.path.isdir(f"{root}/{area}") for area in LEGACY_AREAS)
        else:
            found = any(io.exists(f"{root}/{area}") for area in LEGACY_AREAS)
        self._known = found
        return found

    def _require(self) -> None:
        """Before reading runs, lineage or usage: a store is there (else a clear error)."""
        if not self.exists():
            raise no_store(self.url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # group commit ----------------------------------------------------------------------------
    def _written(
        self, objects: ObjectRow | None = None, cache: tuple[CacheEntry, int] | None = None
    ) -> None:
        """Note a completed write: buffer its index row and schedule a background flush."""
        self._indexes.note(objects, cache)
        if self.durable and self._io.local and not self._dirty:
            with self._dirty_lock:
                self._dirty = True
        FLUSHER.schedule(self, self.sync_interval)

    def sync(self) -> None:
        """Write the batch (as a segment), buffered index rows and, when ``durable``, flush
        written files to disk."""
        self.write_batch()
        self._indexes.flush()
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, False
        if dirty:
            self._io.sync()

    def __enter__(self) -> StoreCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Sync, then close the index connections (they reopen on demand)."""
        self.sync()
        FLUSHER.cancel(self)
        self._indexes.close()
        if self._locks is not None:
            self._locks.close()

    # batching --------------------------------------------------------------------------------
    @contextmanager
    def batched(self) -> Iterator[None]:
        """Group the small writes of the block into segment files (see
        :mod:`mlflowkit.store.segments`); written at the latest when the block ends.

        Runs batch their store. Blocks nest (threads of one run share the batch). Only stores
        whose index every writer shares batch: a local folder (its SQLite index beside the
        files) or any store with a PostgreSQL index; elsewhere this changes nothing.
        """
        if not (self._io.local or self._locks is not None):
            yield
            return
        with self._batch_guard:
            self._batch_depth += 1
            if self._batch is None:
                self._batch = Batch()
        try:
            yield
        finally:
            with self._batch_guard:
                self._batch_depth -= 1
                last = self._batch_depth == 0
            if last:
                try:
                    if sys.exc_info()[1] is None:
                        self.write_batch()
                    else:  # the block's error comes first; the batch is retried at exit
                        with contextlib.suppress(Exception):
                            self.write_batch()
                finally:
                    with self._batch_guard:
                        if (
                            self._batch_depth == 0
                            and self._batch is not None
                            and self._batch.empty()
                        ):
                            self._batch = None

    def write_batch(self) -> None:
        """Write what the batch holds: its index rows, then one segment file, then release the
        locks parked on it. Nothing to do when there is no batch or it is empty.

        When it returns, everything the batch held when it was called is written: a write
        another thread (the background flusher) began first is waited for.
        """
        batch = self._batch
        if batch is None:
            return
        with self._batch_writing:
            if not batch.empty():
                self._write_taken(batch)

    def _write_taken(self, batch: Batch) -> None:
        objects, rows, entries, parked = batch.take()
        try:
            if objects:  # stored already (in an earlier segment): not again
                self._drop_stored(objects, rows)
            if objects or entries:
                records = records_of(objects, entries)
                toc = segment_toc(records)
                data = encode_segment(records, self._guard.sign_document("segment"), toc)
                name = blake3.blake3(data).hexdigest()
                path = segment_path(self.root, name)
                self._ensure()
                # the rows first: killed between the two, they name a segment that is not
                # there (read as missing), never leave a segment no index knows
                self._indexes.note_many(
                    rows, [(e, len(b)) for e, b in entries.values()], places(name, toc)
                )
                try:
                    self._indexes.flush()
                except BaseException:  # the index is away: the file still keeps the work
                    with contextlib.suppress(Exception):
                        self._io.write_atomic(path, (data,), False)
                    raise
                self._io.write_atomic(path, (data,), False)  # then the locks are released
                if self.durable and self._io.local:
                    with self._dirty_lock:
                        self._dirty = True
                    FLUSHER.schedule(self, self.sync_interval)
        except BaseException:
            batch.give_back(objects, rows, entries, parked)
            raise
        for release in parked.values():
            release()

    def _drop_stored(self, objects: dict[str, bytes], rows: list[ObjectRow]) -> None:
        """Leave out of ``objects`` (and ``rows``) those a segment already holds."""
        try:
            known = self._idx(flush=False).find_packed_many([f"o:{d}" for d in objects])
        except StoreError:
            return  # the index cannot say: kept twice, harmless
        stored = {name[2:] for name, place in known.items() if self._segments.exists(place.segment)}
        if stored:
            for digest in stored:
                objects.pop(digest, None)
            rows[:] = [r for r in rows if r.digest not in stored]

    def _batched_write(self, full: bool) -> None:
        """After adding to the batch: write it now when ``full`` (see ``Batch``), else within
        ``COMMIT_DELAY_S``. A write that fails here is kept for the next try: the write at the
        end of the run (before its record) raises what still fails."""
        if full:
            try:
                self.write_batch()
                return
            except StoreError:
                pass
        FLUSHER.schedule(self._committer, COMMIT_DELAY_S)

    def _rewrite_segment(self, name: str, keep: list[tuple[str, str, bytes]]) -> None:
        """Replace segment ``name`` by one holding only ``keep`` (``(kind, name, bytes)``; none:
        just delete it). The new one and its rows are written before the old one goes."""
        if keep:
            toc = segment_toc(keep)
            data = encode_segment(keep, self._guard.sign_document("segment"), toc)
            new = blake3.blake3(data).hexdigest()
            self._io.write_atomic(segment_path(self.root, new), (data,), self.durable)
            self._idx(flush=False).add_batch([], [], places(new, toc))
        self._io.remove(segment_path(self.root, name))
        self._segments.forget(name)

    def _packed(self, kind: str, name: str) -> bytes | None:
        """The bytes of segment record ``kind:name`` (None: not in a segment, or unusable)."""
        place = self._find_packed(f"{kind}:{name}")
        return None if place is None else self._packed_at(kind, name, place)

    def _packed_at(self, kind: str, name: str, place: PackedRow) -> bytes | None:
        """The bytes of segment record ``kind:name`` at ``place`` (None: unusable)."""
        if kind == "o":  # a damaged object record is a corrupt object (set aside by ``get``)
            return self._segments.read(place, signed=False)
        try:
            return self._segments.read(place, signed=True)
        except CorruptFile:  # a damaged cache entry: a miss, and taken out of its segment
            with contextlib.suppress(OSError, StoreError):
                self._set_aside(kind, name)
            return None

    def _find_packed(self, name: str) -> PackedRow | None:
        """Where segment record ``name`` lives; None, and no index opened, where no store is.

        The first time a record is not found, segment files the index does not know (their
        writer died between writing one and committing its rows, or lost its database) are
        read into it, once per store object (``_reconcile``).
        """
        if not self._known and not self.exists():
            return None
        idx = self._idx(flush=False)
        place = idx.find_packed(name)
        if place is None and self._reconcile():
            place = idx.find_packed(name)
        return place

    def _find_packed_many(
        self, names: list[str], *, reconcile: bool = True
    ) -> dict[str, PackedRow]:
        """``_find_packed`` of each of ``names`` (distinct) in one index query: the places of
        those some segment holds. ``reconcile``: a name not found may make it ``_reconcile``
        (else the caller decides)."""
        if not names or (not self._known and not self.exists()):
            return {}
        idx = self._idx(flush=False)
        found = idx.find_packed_many(names)
        if reconcile and len(found) < len(names) and self._reconcile():
            found.update(idx.find_packed_many([n for n in names if n not in found]))
        return found

    def _reconcile(self) -> bool:
        """Once per store object: index the segment files the index does not know; True
        when there were any (then a record not found may be found now)."""
        if self._reconciled:
            return False
        self._reconciled = True
        return self._adopt_segments()

    def _adopt_segments(self) -> bool:
        """Index the segment files the index does not know; True when there were any."""
        idx = self._idx(flush=False)
        known = idx.packed_segments()
        found = [name for _, name in segment_files(self) if name not in known]
        objects, caches, packed = [], [], []
        for name in found:
            got = read_segment(self, name)
            if got is None:
                continue
            rows = rows_of_segment(got, time.time())
            objects += rows[0]
            caches += rows[1]
            packed += rows[2]
        if packed:
            idx.add_batch(objects, caches, packed)
        return bool(packed)

    def _object_bytes(self, digest: str, head: int) -> tuple[bytes, Any] | None:
        """``(first bytes, open file or None)`` of object ``digest``: from the batch, its own
        file or a segment record (then the whole record and None); None when missing."""
        batch = self._batch
        if batch is not None:
            data = batch.objects.get(digest)
            if data is not None:
                return data, None
        got = self._io.read_split(self._object_path(digest), head)
        if got is not None:
            return got
        data = self._packed("o", digest)
        return None if data is None else (data, None)

    # paths -----------------------------------------------------------------------------------
    def _check(self, name: str, what: str) -> str:
        return check_name(name, what, self.url)

    def _object_path(self, digest: str) -> str:
        self._check(digest, "digest")
        return f"{self.root}/objects/{digest[:2]}/{digest}"

    def _cache_path(self, key: str) -> str:
        self._check(key, "cache key")
        return f"{self.root}/cache/{key[:2]}/{key}.json"

    def _pack_path(self, name: str) -> str:
        self._check(name, "pack name")
        return f"{self.root}/packs/{name}.json"

    def _run_path(self, run_id: str, suffix: str = ".json") -> str:
        return self._runs.path(run_id, suffix)

    def _read_run(self, run_id: str) -> bytes | None:
        """A run's record file: the final one, else the one written when it started."""
        return self._runs.read(run_id)

    # index -----------------------------------------------------------------------------------
    def _idx(self, *, fresh: bool = False, flush: bool = True) -> Index:
        """The index (see ``IndexKeeper.index``): every finished write is in it when ``flush``."""
        return self._indexes.index(fresh=fresh, flush=flush)

    @property
    def seams(self) -> Seams:
        """The store's objects, index and guard, for the layers above (the registry, plugins).

        See :class:`mlflowkit.store.seams.StoreSeams`.
        """
        return Seams(
            self.url,
            self._io,
            self.durable,
            self._guard,
            lambda: self._idx(fresh=True, flush=False),  # reopened if replaced; no flush
        )

    def _scan(self) -> Scan:
        """Read the files: object headers, cache entries and run records."""
        return scan_files(self)

    def reindex(self) -> dict[str, int]:
        """Rebuild the index from the files; return how many of each it found."""
        self._require()
        return self._indexes.rebuild()

    # objects ---------------------------------------------------------------------------------
    def has(self, digest: str) -> bool:
        """Whether an object with this content digest is stored (a cheap existence check)."""
        batch = self._batch
        if batch is not None and digest in batch.objects:
            return True
        segment = self._held_in.get(digest)
        if segment is not None and self._segments.exists(segment):
            return True
        if self._io.exists(self._object_path(digest)):
            return True
        self._asked += 1
        if self._unlearned and self._asked > 1:  # many to come: the pack's values in one query
            digests, self._unlearned = self._unlearned, []
            self._learn_places(list(dict.fromkeys(digests)))
            segment = self._held_in.get(digest)
            if segment is not None and self._segments.exists(segment):
                return True
        place = self._find_packed(f"o:{digest}")
        return place is not None and self._segments.exists(place.segment)

    def put(self, value: Any, digest: str | None = None, *, serializer: str | None = None) -> str:
        """Store ``value`` once, atomically; return its content digest.

        Parameters
        ----------
        value:
            Any value a serializer can write (see :mod:`mlflowkit.store.serializers`).
        digest:
            The value's content digest when the caller already has it (else it is computed).
        serializer:
            Force this serializer by name instead of choosing one by type.

        Raises
        ------
        SerializationError
            No serializer could write the value.
        """
        if digest is None:
            from mlflowkit.hashing import hash_value

            digest = hash_value(value)
        path = self._object_path(digest)
        batch = self._batch
        look = True  # for a file of its own, before writing one
        if batch is not None:  # a small one stored in a segment is dropped by ``write_batch``
            if digest in batch.objects:
                return digest
            # a scalar goes to the segment: no look for a file of its own, which only a writer
            # outside a batch makes (then it is kept twice, harmless), a system call a task saves
            look = type(value) not in _SMALL_SCALARS
            if look and self._io.exists(path):
                return digest
        else:
            try:
                if self.has(digest):
                    return digest
            except StoreError:  # the index cannot say (its database is away): write it again
                pass
        name, payload = serializers.dumps(value, serializer)
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        if not self._ready:
            self.create()
        if name in SAFE_SERIALIZERS:
            header = pack_header(name, payload, digest)
        else:  # a serializer that can run code: signed (see _trust)
            checksum = payload_blake3(payload)
            signature = self._guard.sign_object(digest, name, checksum)
            header = pack_header(name, payload, digest, signature=signature, checksum=checksum)
        if (
            batch is not None
            and name in SAFE_SERIALIZERS
            and len(header) + len(payload) <= SMALL_BYTES
        ):
            row = ObjectRow(digest, len(header) + len(payload), name, time.time())
            self._batched_write(batch.add_object(digest, header + payload, row))
            return digest
        if not look and self._io.exists(path):  # not small after all: as any other value
            return digest
        self._io.write_atomic(path, (header, payload), False)
        self._written(objects=ObjectRow(digest, len(header) + len(payload), name, time.time()))
        return digest

    def _read_header(
        self, path: str
    ) -> tuple[str, int, bytes, int, str | None, bytes | None] | None:
        got = self._io.read_split(path, HEAD_MAX)
        if got is None:
            return None
        first, f = got
        if f is not None:
            f.close()
        try:
            return parse_header(first)
        except CorruptFile:
            return None

    def _load_payload(self, digest: str) -> tuple[str, bytes, bool] | None:
        """``(serializer, payload, bound)`` after every integrity check; None when missing.

        ``bound`` is False for an object written before headers named their address (its
        name can only be checked by hashing its value). An object whose serializer can run
        code is returned only when its signature verifies by a key allowed to write here
        (else :class:`UntrustedObjectError`, before anything is deserialized).
        """
        got = self._object_bytes(digest, 1 << 16)
        if got is None:
            return None
        first, f = got
        try:
            name, size, checksum, head, address, signature = parse_header(first)
            if address is not None and address != digest:
                raise CorruptFile(
                    f"its header says it is object {address}: the file was copied or moved "
                    "here from another object's place"
                )
            if f is None or len(first) < 1 << 16:
                payload = first[head:]
            else:
                f.seek(head)
                payload = f.readall()
        finally:
            if f is not None:
                f.close()
        if len(payload) != size:
            raise CorruptFile(f"payload is {len(payload)} bytes, the header says {size}")
        if payload_blake3(payload) != checksum:
            raise CorruptFile("payload BLAKE3 does not match the header")
        if name not in SAFE_SERIALIZERS:  # the payload is bound to the signed checksum
            self._guard.check_object(digest, name, checksum, signature)
        return name, payload, address is not None

    def _check_value(self, digest: str, value: Any) -> None:
        """Raise ``CorruptFile`` when ``value`` does not hash to ``digest`` (when it hashes)."""
        from mlflowkit.hashing import hash_value

        try:
            actual = hash_value(value)
        except HashingError:  # no hasher for its type in this process: cannot tell
            return
        if actual != digest:
            raise CorruptFile(f"its value hashes to {actual}, not to the name it is stored under")

    def get(self, digest: str) -> Any:
        """Load, verify and deserialize the object with this digest.

        Raises
        ------
        CorruptObjectError
            The object failed its integrity check; it was quarantined, its cache entries
            dropped, and the step that made it will execute again on the next run.
        MissingObjectError
            No object with this digest is stored (a ``StoreError``).
        SerializationError
            The serializer named in the header is not registered here or failed.
        """
        try:
            got = self._load_payload(digest)
            if got is not None and not got[2]:  # written before headers named their address
                value = serializers.loads(got[0], got[1])
                self._check_value(digest, value)
                return value
        except CorruptFile as exc:
            raise self._corrupt(digest, exc) from None
        if got is None:
            raise MissingObjectError(
                f"no object {digest} in store {self.url}: it was never stored here, or was "
                "removed by gc. Run the pipeline again to recompute it.",
                digest=digest,
                url=self.url,
            )
        return serializers.loads(got[0], got[1])

    def _corrupt(self, digest: str, exc: CorruptFile) -> CorruptObjectError:
        """Set a corrupt object aside; the error to raise."""
        if self._quarantine(digest):
            fix = (
                "it was moved to quarantine/ and its cache entries dropped, so the step that "
                "produced it will execute again on the next run."
            )
        else:
            fix = (
                "the store cannot be written, so it stays in place: delete the file, or run "
                "`mlflowkit store verify` with write access to set it aside."
            )
        return CorruptObjectError(
            f"object {digest} in store {self.url} is corrupt ({exc}); {fix}",
            digest=digest,
            url=self.url,
        )

    def info(self, digest: str) -> ObjectInfo:
        """The object's header facts (serializer, sizes, payload BLAKE3) without loading it."""
        try:
            got = self._object_bytes(digest, HEAD_MAX)
            if got is None:
                raise StoreError(f"no object {digest} in store {self.url}", digest=digest)
            first, f = got
            if f is not None:
                f.close()
            name, size, checksum, head, _, _ = parse_header(first)
        except CorruptFile as exc:
            raise CorruptObjectError(
                f"object {digest} has a corrupt header ({exc}); run store.verify() to set it aside",
                digest=digest,
                url=self.url,
            ) from None
        return ObjectInfo(digest, name, head + size, size, checksum.hex())

    def _quarantine(self, digest: str) -> bool:
        """Move an object to ``quarantine/``, drop its cache entries; False if read-only."""
        src = self._object_path(digest)
        dst = f"{self.root}/quarantine/{digest}.{time.time_ns()}"
        try:
            if not self._io.move(src, dst):  # no file of its own: a segment record?
                self._set_aside("o", digest)
        except OSError:
            return False
        idx = self._idx()
        keys = idx.cache_keys_for(digest)
        for key in keys:
            self._io.remove(self._cache_path(key))
        idx.remove_cache(keys)
        idx.remove_objects([digest])
        self.drop_packs()
        return True

    def _discard(self, path: str) -> None:
        """Delete a damaged file met while reading; left alone when the store is read-only."""
        with contextlib.suppress(OSError):
            self._io.remove(path)

    # cache -----------------------------------------------------------------------------------
    def get_cache(self, key: str) -> CacheEntry | None:
        """The cache entry for ``key``; None when missing, corrupt, or its object is gone.

        Looked for in this run's batch, then in the entry's own file, then in a segment. A file
        that is damaged (deleted), unsigned or signed by a key that may not write (reported by
        ``verify``) does not count, and hides no entry a segment holds.
        """
        batch = self._batch
        if batch is not None:
            kept = batch.entries.get(key)
            if kept is not None:
                return kept[0]
        entry = self._entry_file(key, batch)
        if entry is None:
            packed = self._packed("c", key)
            entry = None if packed is None else self._entry_record(key, packed)
            if entry is None:
                return None
        if entry.stored and not self.has(entry.output_digest):
            return None
        return entry

    def get_cache_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        """The cache entries of ``keys`` that ``get_cache`` finds, by key, read in bulk: the
        same entries by the same rules, with one index query for the segment records (see
        :mod:`mlflowkit.store._bulk`).

        Raises
        ------
        StoreError
            A key is not a valid name (as ``get_cache``).
        """
        return cache_entries(self, keys)

    def _entry_file(self, key: str, batch: Batch | None) -> CacheEntry | None:
        """The entry in ``key``'s own file, when it is valid and signed by a key allowed to
        write here; a damaged file is deleted. A missing one is noted in ``batch``."""
        path = self._cache_path(key)
        data = self._io.read(path)
        if data is None:
            if batch is not None:
                batch.absent.add(key)
            return None
        entry, block, digest = decode_entry_signed(data)
        if entry is None or entry.key != key:
            self._discard(path)
            return None
        if self._guard.document_problem("cache", digest, block) is not None:
            return None
        return entry

    @staticmethod
    def _entry_record(key: str, data: bytes) -> CacheEntry | None:
        """The entry in a segment record (trusted by its segment's signed TOC), if it is
        ``key``'s."""
        entry = decode_entry_signed(data)[0]
        return entry if entry is not None and entry.key == key else None

    def read_pack(self, name: str) -> dict[str, CacheEntry]:
        """The cache entries of pack ``name`` by key (empty when missing or damaged).

        A pack is only a faster way to read many cache entries at once: every entry in it was
        true when it was written, and the caller still checks that a stored output exists.
        """
        path = self._pack_path(name)
        data = self._io.read(path)
        if data is None:
            return {}
        entries, block, digest = decode_pack_signed(data)
        if entries is None:
            self._discard(path)
            return {}
        if self._guard.document_problem("pack", digest, block) is not None:
            return {}  # unsigned or forged: ignored (the run reads its entries one by one)
        # where they live is asked in one query once a second value is checked (``has``): a
        # re-run that checks only its output asks once, and opens no more than it needs
        self._unlearned += [e.output_digest for e in entries.values() if e.stored]
        return entries

    def _learn_places(self, digests: list[str]) -> None:
        """Ask the index once where the segment-held ones of ``digests`` live (a re-run then
        checks its values without a query each)."""
        if not digests or not (self._known or self.exists()):
            return
        try:
            found = self._idx(flush=False).find_packed_many([f"o:{d}" for d in digests])
        except StoreError:
            return  # asked one by one later
        segments: dict[str, str] = {}  # one string per segment, shared by its values
        for digest in digests:  # the pack's own strings as keys: a few dozen bytes a value
            place = found.get(f"o:{digest}")
            if place is not None:
                self._held_in[digest] = segments.setdefault(place.segment, place.segment)

    def write_pack(self, name: str, entries: Iterable[CacheEntry]) -> None:
        """Replace pack ``name`` with ``entries``, atomically."""
        self._ensure()
        data = encode_pack(list(entries), self._guard.sign_document("pack"))
        self._io.write_atomic(self._pack_path(name), (data,), False)

    def put_cache(self, entry: CacheEntry) -> None:
        """Record, atomically, that the call with ``entry.key`` gave ``entry.output_digest``."""
        path = self._cache_path(entry.key)
        self._check(entry.output_digest, "output digest")
        if not self._ready:
            self.create()
        batch = self._batch
        if batch is not None:  # signed with its segment
            if self._io.local and entry.key not in batch.absent:
                self._io.remove(path)  # an entry file of this key (an earlier one) would hide it
            self._batched_write(batch.add_entry(entry, encode_entry(entry)))
            return
        data = encode_entry(entry, self._guard.sign_document("cache"))
        self._io.write_atomic(path, (data,), False)
        self._written(cache=(entry, len(data)))

    def drop_cache(self, key: str) -> None:
        """Forget the cache entry for ``key`` (no error when there is none)."""
        self._io.remove(self._cache_path(key))
        self._idx().remove_cache([key])
        self.drop_packs()

    def drop_packs(self) -> None:
        """Delete every cache pack (they may list a dropped entry; the next runs remake them)."""
        for f in self._own_files("packs"):
            if f.name.endswith(".json") and NAME.fullmatch(f.name[:-5]):
                self._io.remove(f"{self.root}/packs/{f.name}")

    def _own_files(self, area: str) -> list[FileStat]:
        """The files directly in ``area``, or none when it is a link to a folder elsewhere."""
        folder = f"{self.root}/{area}"
        return self._io.listdir(folder) if self._io.own_dir(folder) else []

    def lock(
        self, key: str, timeout: float = DEFAULT_LOCK_TIMEOUT_S
    ) -> AbstractContextManager[bool]:
        """A single-flight lock on ``key``: ``with store.lock(key) as acquired: ...``.

        Yields True once acquired, False after ``timeout`` seconds. On a local disk the lock is
        a kernel record lock (``store/flight.py``), released by the kernel the moment its holder
        dies; with a shared index (``index="postgresql://…"``) it is the database's, for every
        machine at once, likewise released when the holder dies. Elsewhere it is a lock file
        with a lease: a holder that died (its pid is gone on this host, or its lease of
        ``lock_lease`` seconds ran out) is broken. While a run batches, the lock is released
        only once the batch holding the entry written under it is written.
        """
        name = key if LOCK_NAME.fullmatch(key) else blake3.blake3(key.encode()).hexdigest()
        self._ensure()
        return self._parking(key, name, timeout)

    @contextmanager
    def _parking(self, key: str, name: str, timeout: float) -> Iterator[bool]:
        """The lock on ``name``; while a run batches, released only once the batch holding
        ``key``'s new entry is written (see :mod:`mlflowkit.store.segments`)."""
        batch = self._batch
        if batch is not None and batch.is_parked(name):
            self.write_batch()  # this process holds it, parked: release it first
        stack = ExitStack()
        if self._locks is not None:
            acquired = stack.enter_context(self._locks.lock(name, timeout))
        else:
            acquired = stack.enter_context(
                hold(
                    self._io,
                    f"{self.root}/locks/{name}.lock",
                    timeout=timeout,
                    lease=self.lock_lease,
                )
            )
        try:
            yield acquired
        finally:
            batch = self._batch
            if batch is not None and key in batch.entries:
                batch.park(name, stack.close)
            else:
                stack.close()

    # runs ------------------------------------------------------------------------------------
    def put_run(self, record: RunRecord) -> None:
        """Write (or overwrite) a run record atomically.

        A record with status ``running`` goes to ``runs/<id>.started``; the finished record
        goes to ``runs/<id>.json`` and then the ``.started`` file is removed. The finished one
        is so written under a new name instead of over the old (replacing a file makes some
        filesystems flush it to disk at once, ~0.5 ms); readers prefer ``.json``.

        A running record without an ``owner`` is given this process as its owner (host, boot,
        pid, start time): readers show the run as ``interrupted`` once that process is gone.

        Raises
        ------
        StoreError
            The record holds something JSON cannot write, or the file could not be written
            (disk full, read-only store). A finished record that cannot be written removes
            the ``.started`` one, so no record claims that the run is still going.
        """
        running = record.status == "running"
        parts = self._runs.encode(record)  # in pieces: no copy of the whole record is made
        self._ensure()
        if not running:
            self.write_batch()  # what the record names is written before the record
        if not running and executed(record):  # signed once per run (see ``executed``)
            parts = sign_run_parts(parts, self._guard.sign_document("run"))
        self._runs.write(record.id, parts, running)
        if self.durable and self._io.local:
            with self._dirty_lock:
                self._dirty = True
        # no index row here: see ``runfiles``

    def _run_files(self) -> list[RunFile]:
        """Every run's record file (see ``RunFiles.listing``)."""
        return self._runs.listing()

    def _synced(self) -> Index:
        self._require()
        idx = self._idx(fresh=True)
        idx.sync_runs(self._runs.listing(), self._runs.text)
        return idx

    def runs(self) -> list[RunRecord]:
        """All (readable) run records, newest first.

        A record still marked ``running`` whose owner is provably gone (killed, crashed: see
        ``put_run``) reads as ``interrupted``; the file itself is left as it is.

        Raises
        ------
        StoreError
            There is no store at this url (nothing is created).
        """
        return [as_read(r) for r in self._synced().run_records()]

    def run(self, run_id: str) -> RunRecord:
        """One run record, by id or by a unique prefix of it.

        Raises
        ------
        StoreError
            No run matches, or the prefix matches several (the candidates are listed).
        """
        idx = self._synced()
        ids = idx.run_ids(run_id)
        if run_id in ids:
            ids = [run_id]
        if not ids:
            recent = idx.run_ids("")[:5]
            hint = f"recent runs: {', '.join(recent)}" if recent else "the store has no runs"
            raise StoreError(f"no run {run_id!r} in store {self.url}; {hint}", url=self.url)
        if len(ids) > 1:
            shown = ", ".join(ids[:10]) + (f", … ({len(ids)} in all)" if len(ids) > 10 else "")
            raise StoreError(
                f"run id prefix {run_id!r} is ambiguous: it matches {shown}; give more characters",
                url=self.url,
            )
        return self._runs.load(ids[0])

    # maintenance -----------------------------------------------------------------------------
    def stale_temps(self, max_age: float = TMP_MAX_AGE_S) -> list[FileStat]:
        """Temp files of this store left by writers that died.

        Only names this store makes (``TEMP_NAME``) in its own ``tmp/`` folder count: those
        older than ``max_age`` seconds, and at once those whose writer is provably gone.
        """
        if not self._io.local or not self.exists():
            return []
        now = time.time()
        return [
            f
            for f in self._own_files("tmp")
            if TEMP_NAME.fullmatch(f.name) and (now - f.mtime > max_age or temp_owner_dead(f.name))
        ]

    def sweep_tmp(self, max_age: float = TMP_MAX_AGE_S) -> int:
        """Delete the temp files crashed writers left (see ``stale_temps``); how many."""
        removed = 0
        for f in self.stale_temps(max_age):
            with contextlib.suppress(OSError):
                removed += self._io.remove(f"{self.root}/tmp/{f.name}")
        return removed

    def _object_files(self, area: str, suffix: str = "") -> list[tuple[FileStat, str]]:
        """``(file, name)`` of each file under ``objects/`` or ``cache/`` this store made.

        A file counts when it sits in the ``ab/`` folder its name starts with and its name
        (less ``suffix``) is a valid digest or key; a linked folder is not looked into.
        """
        folder = f"{self.root}/{area}"
        if not self._io.own_dir(folder):
            return []
        out = []
        for f in self._io.walk(folder):
            sub, _, base = f.name.rpartition("/")
            name = base[: len(base) - len(suffix)] if base.endswith(suffix) else ""
            if NAME.fullmatch(name) and sub == name[:2]:
                out.append((f, name))
        return out

    def verify(self) -> list[str]:
        """Check every stored object and signed record; return what fails.

        Corrupt objects first (sorted digests), then untrusted objects, then the guard's
        findings (cache entries, packs, policy, audit); see ``mk.Store.verify``.

        Raises
        ------
        StoreError
            There is no store at this url.
        """
        self._require()
        self.sync()
        corrupt, untrusted = verify_objects(self)
        packed_corrupt, segment_lines = verify_segments(self)
        return (
            sorted(corrupt + packed_corrupt)
            + untrusted
            + segment_lines
            + record_findings(self)
            + self._guard.findings()
        )

    def _forget_packed(self, kind: str, name: str) -> None:
        """Forget a segment record (damaged): its object or entry, and entries pointing at it."""
        idx = self._idx()
        if kind == "o":
            keys = idx.cache_keys_for(name)
            idx.remove_cache(keys)
            idx.remove_objects([name])
        else:
            idx.remove_cache([name])
        self.drop_packs()

    def _set_aside(self, kind: str, name: str) -> None:
        """Take a damaged segment record out of its segment: its bytes go to ``quarantine/``
        (an object's), the segment is written again without it, and the index forgets it."""
        place = self._find_packed(f"{kind}:{name}")
        data = self._io.read(segment_path(self.root, place.segment)) if place else None
        split = records_in(place.segment, data) if place and data is not None else None
        if place is not None and data is not None and split is not None:
            if kind == "o":
                start = decode_segment(data)[1] + place.offset
                self._io.write_atomic(
                    f"{self.root}/quarantine/{name}.{time.time_ns()}",
                    (data[start : start + place.length],),
                    False,
                )
            keep = [(k, n, blob) for k, n, blob, _ in split[1] if (k, n) != (kind, name)]
            self._rewrite_segment(place.segment, keep)
        self._forget_packed(kind, name)

    def _quarantine_segment(self, name: str) -> None:
        """Set a segment whose TOC is damaged aside in ``quarantine/``. The index rows that
        name it then name a segment that is not there: its records read as missing."""
        with contextlib.suppress(OSError):
            self._io.move(
                segment_path(self.root, name), f"{self.root}/quarantine/{name}.{time.time_ns()}"
            )
        self._segments.forget(name)

    def gc(
        self,
        *,
        keep_last: int = 10,
        pins: Iterable[str] | None = None,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> GcReport:
        """Delete what neither recent runs nor pins reference; see ``mk.Store.gc``.

        Raises
        ------
        StoreError
            ``keep_last`` is negative, or there is no store at this url.
        """
        from mlflowkit.store._gc import collect

        return collect(self, keep_last=keep_last, pins=pins, older_than=older_than, dry_run=dry_run)

    def du(self) -> dict[str, Any]:
        """Counts and bytes per area: objects, cache, segments, runs, packs, quarantine, tmp,
        total.

        Read from the files themselves (the truth), so it is right even after a writer was
        killed before its index rows were written.

        Raises
        ------
        StoreError
            There is no store at this url (nothing is created).
        """
        self._require()
        return disk_usage(self)


#: Stores of this process, synced at interpreter exit so no buffered index row is lost.
_OPEN_STORES: weakref.WeakSet[StoreCore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """At exit: stop background flushes first, then sync and close every store from here."""
    FLUSHER.stop()
    for store in list(_OPEN_STORES):
        try:
            store.close()
        except Exception:
            continue
