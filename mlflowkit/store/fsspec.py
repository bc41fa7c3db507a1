"""``Store``: the artifact store on any fsspec filesystem (local folder, ``memory://``, S3, ...).

Layout under the store URL::

    objects/ab/<digest>      object: header + payload (see below)
    cache/ab/<key>.json      cache entry: {"checksum": "<blake3 of entry>", "entry": {...}}
    runs/<run_id>.json       run record (RunRecord.to_stored() as JSON)
    runs/<run_id>.started    the record written when the run started (removed when it ends)
    packs/<name>.json        cache pack: the cache entries one pipeline's last run used
    locks/<key>.lock         single-flight lock: pid, host, token, lease expiry
    quarantine/<digest>.<t>  objects that failed their integrity check, set aside
    registry/                named artifact versions and promotions, one JSON file each
                             (``mlflowkit.registry.journal``; the index numbers them)
    tmp/                     temp files of in-flight local writes (swept when old)
    index.sqlite             query index (local stores; remote ones keep it in a cache folder)
    mlflowkit-store.json     the marker: this folder is a store (written when it is created),
                             and its owner's key id, signed
    policy/<n>.json          policy version n (signed by an admin)
    audit/<n>.json           audit entry n (signed, hash-chained)

The object and cache-entry file formats are described in ``mlflowkit.store._format``.

Invariants:

* Objects are addressed by the content digest of their value (``hash_value``); ``put`` skips
  digests already present and writes atomically (see ``_io``), so a reader sees a whole object
  or none.
* ``get`` checks the header and the payload's BLAKE3 *before* deserializing. A mismatch moves
  the object to ``quarantine/``, drops the cache entries pointing at it and raises
  :class:`~mlflowkit.errors.CorruptObjectError`: a corrupt object is never returned.
* A cache entry carries the BLAKE3 of its own JSON; a corrupt entry reads as missing (and is
  removed), and so does an entry whose stored object is gone.
* An object's header names the digest it is stored under; ``get`` compares it with the digest
  asked for (one string compare), so a file copied over another object's is corrupt, never a
  hit. ``verify`` also re-hashes each value and compares it with its name.
* Objects whose serializer can run code (pickle, plugins) carry the writer's signature in
  their header and are deserialized only after it verifies by a key allowed to write here;
  cache entries and packs are signed too and read as missing otherwise. ``policy/`` holds the
  signed policy chain and ``audit/`` the signed audit chain (see ``_trust``).
* The files are the truth; ``index.sqlite`` is rebuilt from them when missing or replaced, and
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
  is fsynced.
* Index rows for new objects and cache entries are buffered and written in one transaction
  (at the next query, ``sync()``, or within ``sync_interval``); the files stay the truth.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3
import orjson

from mlflowkit.errors import (
    CorruptObjectError,
    HashingError,
    MissingObjectError,
    SerializationError,
    StoreError,
    UntrustedObjectError,
)
from mlflowkit.records import CacheEntry, RunRecord
from mlflowkit.store import _owner, serializers
from mlflowkit.store._flush import FLUSHER, sync_filesystem
from mlflowkit.store._format import (
    HEAD_MAX,
    CorruptFile,
    decode_entry,
    decode_entry_signed,
    decode_pack_signed,
    encode_entry,
    encode_pack,
    pack_header,
    parse_header,
    payload_blake3,
    sign_run,
)
from mlflowkit.store._gc import GcReport
from mlflowkit.store._governance import Governance
from mlflowkit.store._io import TEMP_NAME, FileStat, FsspecIO, LocalIO, temp_owner_dead
from mlflowkit.store._trust import SAFE_SERIALIZERS, Guard
from mlflowkit.store.base import ArtifactStore
from mlflowkit.store.index import Index, ObjectRow, RunFile
from mlflowkit.store.locks import DEFAULT_LEASE_S, hold

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

    from mlflowkit.registry.records import ArtifactVersion, Promotion


__all__ = ["DEFAULT_URL", "GcReport", "ObjectInfo", "Store", "open_store"]

DEFAULT_URL = ".mlflowkit"
_STARTED = ".started"  # the record of a run in progress (see ``put_run``)
TMP_MAX_AGE_S = 30 * 60.0  # a temp file older than this belongs to a writer that died
DEFAULT_LOCK_TIMEOUT_S = 300.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,199}")
_LOCK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,119}")
_QUARANTINED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,199}\.\d{1,20}")
MARKER = "mlflowkit-store.json"


@dataclass(frozen=True)
class ObjectInfo:
    """What an object's header says, read without loading the payload."""

    digest: str
    serializer: str
    size: int
    payload_size: int
    payload_blake3: str


_memory_indexes: dict[str, str] = {}
_memory_lock = threading.Lock()


#: local store folders laid out by this process: root -> inode of its tmp/ folder
_PREPARED: dict[str, int] = {}
_AREAS = ("objects", "cache", "packs", "runs", "locks", "quarantine", "tmp")
#: what every earlier version laid out when it opened a store (a store made before the marker)
_LEGACY_AREAS = ("objects", "cache", "runs")


def _prepare_layout(root: str, io: LocalIO, marker_bytes: Callable[[], bytes]) -> bool:
    """Create the store's folders and marker unless this process did so already.

    One ``stat`` tells a folder laid out here before from one that is new or was deleted and
    made again since (its ``tmp/`` is another inode then). True when it was laid out now.
    """
    try:
        ino = os.stat(os.path.join(root, "tmp")).st_ino
    except FileNotFoundError:
        ino = None
    if ino is not None and _PREPARED.get(root) == ino:
        return False
    for area in _AREAS:
        path = os.path.join(root, area)
        if not os.path.isdir(path):  # a stat: a quarter of what makedirs costs when it exists
            os.makedirs(path, exist_ok=True)
    marker = os.path.join(root, MARKER)
    if not os.path.exists(marker):
        io.write_atomic(marker, (marker_bytes(),), False)
    _PREPARED[root] = os.stat(os.path.join(root, "tmp")).st_ino
    return True


def _no_store(url: str) -> StoreError:
    return StoreError(
        f"no mlflowkit store at {url}; create one by running a pipeline with --store {url} "
        f"(or plan.run(store=...)), or give the path of an existing store. Expected a folder "
        f"holding {MARKER} (or the objects/, cache/ and runs/ folders of a store made by an "
        "earlier version); nothing was created.",
        url=url,
    )


def _private_index(key: str, name: str) -> str:
    """An index file of this process only (in a temp folder removed at exit)."""
    with _memory_lock:
        if key not in _memory_indexes:
            import shutil
            import tempfile

            folder = tempfile.mkdtemp(prefix="mlflowkit-index-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _memory_indexes[key] = os.path.join(folder, name)
        return _memory_indexes[key]


def _read_only_index(local_root: str) -> str:
    """A private index for a store that cannot be written, seeded from the store's own.

    The store's ``index.sqlite`` is copied (opened ``immutable``: no lock, no -wal/-shm
    files are made) when it can be read; run rows are then re-synced from the files as
    always, and anything else missing is rebuilt from them.
    """
    import sqlite3

    path = _private_index("ro:" + local_root, "index.sqlite")
    if os.path.exists(path):
        return path
    source = os.path.join(local_root, "index.sqlite")
    if os.path.exists(source):
        try:
            src = sqlite3.connect(f"file:{source}?mode=ro&immutable=1", uri=True)
            try:
                dst = sqlite3.connect(path)
                try:
                    src.backup(dst)
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.Error:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # rebuilt from the files instead
    return path


def _index_path(url: str, local_root: str | None, protocol: str, writable: bool = True) -> str:
    if local_root is not None:
        return (
            os.path.join(local_root, "index.sqlite") if writable else _read_only_index(local_root)
        )
    name = blake3.blake3(url.encode()).hexdigest()[:32] + ".sqlite"
    if protocol == "memory":
        # a memory filesystem lives and dies with this process: so does its index
        return _private_index(url, name)
    base = os.environ.get("MLFLOWKIT_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "mlflowkit"
    )
    return os.path.join(base, "index", name)


class Store(Governance):
    """The artifact store: objects, cache entries, run records, locks, lineage.

    Parameters
    ----------
    url:
        A local folder, ``file://`` URL or any fsspec URL (``memory://x``, ``s3://bucket/p``).
        Default: ``$MLFLOWKIT_STORE``, else ``./.mlflowkit`` (made absolute at construction).
    durable:
        Flush written files to stable storage on local disks (default), as a group commit:
        in the background within ``sync_interval`` seconds and at interpreter exit, and at
        once on ``sync()``. ``False`` never flushes: writes stay atomic and verified, but a power
        failure may lose the most recent ones; for throwaway stores.
    sync_interval:
        Seconds between a write and its background flush (index rows and, if durable, data).
    lock_lease:
        Seconds a single-flight lock stays valid without its holder's heartbeat.
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
        durable: bool = True,
        lock_lease: float = DEFAULT_LEASE_S,
        sync_interval: float = 1.0,
        key: str | os.PathLike[str] | None = None,
        **storage_options: Any,
    ) -> None:
        if url is None:
            url = os.environ.get("MLFLOWKIT_STORE") or DEFAULT_URL
        url = os.fspath(url)
        if not isinstance(url, str) or not url or "\x00" in url:
            raise StoreError(
                f"invalid store url {url!r}: expected a folder path or an fsspec URL (e.g. "
                "'./.mlflowkit' or 'memory://name'), not empty and without NUL characters; "
                "pass '.' for the current folder.",
                url=str(url),
            )
        fs: Any = None
        if "://" in url or "::" in url or storage_options:
            from fsspec.core import url_to_fs

            try:
                fs, path = url_to_fs(url, **storage_options)
            except (ValueError, ImportError) as exc:
                raise StoreError(
                    f"cannot open store {url!r}: {exc}. Expected a folder or an fsspec URL "
                    "such as 'memory://name' or 's3://bucket/prefix' (with its fsspec backend "
                    "installed).",
                    url=url,
                ) from exc
        else:
            path = url  # a plain folder: no need to import fsspec at all
        self.durable = durable
        self.lock_lease = lock_lease
        self.sync_interval = sync_interval
        self._pending_objects: list[ObjectRow] = []
        self._pending_cache: list[tuple[CacheEntry, int]] = []
        self._dirty = False
        self._pending_lock = threading.Lock()
        self._storage_options = storage_options
        self._io: LocalIO | FsspecIO
        if fs is None or _is_local_fs(fs):
            root = os.path.abspath(path)
            self.url = root
            self._io = LocalIO(root)
            if os.path.exists(root) and not os.path.isdir(root):
                raise StoreError(
                    f"cannot create a store at {root}: it is a file. Expected a folder (or a "
                    "path where one can be created); pass another url or set $MLFLOWKIT_STORE.",
                    url=root,
                )
        else:
            root = path.rstrip("/")
            self.url = fs.unstrip_protocol(root)
            self._io = FsspecIO(fs, root)
        self.root = root
        if fs is None:
            protocol = "file"
        else:
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self._protocol = protocol
        self._index_file: str | None = None  # chosen on first use (read-only stores differ)
        self._index: Index | None = None
        self._index_lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ready = False  # laid out (folders and marker) by this object
        self._known = False  # seen to be a store
        self._key = key
        self._guard = Guard(self, key)
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
        try:
            if self._io.local:
                assert isinstance(self._io, LocalIO)
                if _prepare_layout(self.root, self._io, self._guard.marker_bytes):
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
        found = io.exists(f"{root}/{MARKER}")
        if not found and io.local:
            found = all(os.path.isdir(f"{root}/{area}") for area in _LEGACY_AREAS)
        elif not found:
            found = any(io.exists(f"{root}/{area}") for area in _LEGACY_AREAS)
        self._known = found
        return found

    def _require(self) -> None:
        """Before reading runs, lineage or usage: a store is there (else a clear error)."""
        if not self.exists():
            raise _no_store(self.url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _reopen,
            (
                self.url,
                self.durable,
                self.lock_lease,
                self._storage_options,
                self.sync_interval,
                self._key,
            ),
        )

    # group commit ----------------------------------------------------------------------------
    def _written(
        self, objects: ObjectRow | None = None, cache: tuple[CacheEntry, int] | None = None
    ) -> None:
        """Note a completed write: buffer its index row and schedule a background flush."""
        with self._pending_lock:
            if objects is not None:
                self._pending_objects.append(objects)
            if cache is not None:
                self._pending_cache.append(cache)
            self._dirty = self._dirty or (self.durable and self._io.local)
        FLUSHER.schedule(self, self.sync_interval)

    def _flush_index(self) -> None:
        with self._pending_lock:
            objects, self._pending_objects = self._pending_objects, []
            caches, self._pending_cache = self._pending_cache, []
        if objects or caches:
            try:
                self._idx(flush=False).add_batch(objects, caches)
            except BaseException:  # keep the rows for the next flush
                with self._pending_lock:
                    self._pending_objects[:0] = objects
                    self._pending_cache[:0] = caches
                raise

    def sync(self) -> None:
        """Write buffered index rows and, when ``durable``, flush written files to disk."""
        self._flush_index()
        with self._pending_lock:
            dirty, self._dirty = self._dirty, False
        if dirty:
            sync_filesystem(self.root)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Sync, then close the index connections (they reopen on demand)."""
        self.sync()
        FLUSHER.cancel(self)
        with self._index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None

    # paths -----------------------------------------------------------------------------------
    def _check(self, name: str, what: str) -> str:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise StoreError(
                f"invalid {what} {name!r}: expected 2 to 200 characters from [A-Za-z0-9_.-] "
                f"(a hex digest), starting with a letter or digit",
                digest=name if isinstance(name, str) else None,
                url=self.url,
            )
        return name

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
        self._check(run_id, "run id")
        return f"{self.root}/runs/{run_id}{suffix}"

    def _read_run(self, run_id: str) -> bytes | None:
        """A run's record file: the final one, else the one written when it started."""
        data = self._io.read(self._run_path(run_id))
        return data if data is not None else self._io.read(self._run_path(run_id, _STARTED))

    # index -----------------------------------------------------------------------------------
    def _idx(self, *, fresh: bool = False, flush: bool = True) -> Index:
        """The index, opened (and rebuilt from the files) on first use or when replaced.

        Buffered rows are written first (``flush``), so every query sees every finished write.
        """
        if flush and (self._pending_objects or self._pending_cache):
            self._flush_index()
        idx = self._index
        if idx is not None and not (fresh and self._io.local and idx.replaced()):
            return idx
        with self._index_lock:
            if self._index is not None and self._index is not idx:
                return self._index
            if idx is not None:
                idx.close()
            if self._index_file is None:
                local_root = self.root if self._io.local else None
                writable = local_root is None or _index_writable(local_root)
                self._index_file = _index_path(self.url, local_root, self._protocol, writable)
            idx = Index(self._index_file)
            if not idx.is_built():
                self._rebuild(idx, clear=False)
            self._index = idx
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, idx.close)
            self._finalizer.atexit = False  # at exit, _close_open_stores closes it in order
        return idx

    def _scan(
        self,
    ) -> tuple[list[ObjectRow], list[tuple[CacheEntry, int]], list[tuple[RunFile, str]]]:
        """Read the files: object headers, cache entries and run records."""
        objects = []
        for f in self._io.walk(f"{self.root}/objects"):
            digest = f.name.rsplit("/", 1)[-1]
            got = self._read_header(f"{self.root}/objects/{f.name}")
            if got is not None:
                objects.append(ObjectRow(digest, f.size, got[0], f.mtime))
        caches = []
        for f in self._io.walk(f"{self.root}/cache"):
            data = self._io.read(f"{self.root}/cache/{f.name}")
            entry = decode_entry(data) if data is not None else None
            if entry is not None:
                caches.append((entry, f.size))
        runs = []
        for rf in self._run_files():
            data = self._read_run(rf.run_id)
            if data is not None:
                runs.append((rf, data.decode("utf-8", "replace")))
        return objects, caches, runs

    def _rebuild(self, idx: Index, *, clear: bool) -> None:
        objects, caches, runs = self._scan()
        idx.rebuild(objects, caches, runs, clear=clear)

    def reindex(self) -> dict[str, int]:
        """Rebuild the index from the files; return how many of each it found."""
        self._require()
        idx = self._idx(fresh=True)
        objects, caches, runs = self._scan()
        idx.rebuild(objects, caches, runs, clear=True)
        return {"objects": len(objects), "cache": len(caches), "runs": len(runs)}

    # objects ---------------------------------------------------------------------------------
    def has(self, digest: str) -> bool:
        """Whether an object with this content digest is stored (a cheap existence check)."""
        return self._io.exists(self._object_path(digest))

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
        if self._io.exists(path):
            return digest
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
        got = self._io.read_split(self._object_path(digest), 1 << 16)
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
        path = self._object_path(digest)
        got = self._io.read_split(path, HEAD_MAX)
        if got is None:
            raise StoreError(f"no object {digest} in store {self.url}", digest=digest)
        first, f = got
        if f is not None:
            f.close()
        try:
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
            self._io.move(src, dst)
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
        """The cache entry for ``key``; None when missing, corrupt, or its object is gone."""
        path = self._cache_path(key)
        data = self._io.read(path)
        if data is None:
            return None
        entry, block, digest = decode_entry_signed(data)
        if entry is None or entry.key != key:
            self._discard(path)
            return None
        if self._guard.document_problem("cache", digest, block) is not None:
            return None  # unsigned or forged: a miss (reported by verify, replaced by the run)
        if entry.stored and not self._io.exists(self._object_path(entry.output_digest)):
            return None
        return entry

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
        return entries

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
            if f.name.endswith(".json") and _NAME.fullmatch(f.name[:-5]):
                self._io.remove(f"{self.root}/packs/{f.name}")

    def _own_files(self, area: str) -> list[FileStat]:
        """The files directly in ``area``, or none when it is a link to a folder elsewhere."""
        folder = f"{self.root}/{area}"
        return self._io.listdir(folder) if self._io.own_dir(folder) else []

    def lock(
        self, key: str, timeout: float = DEFAULT_LOCK_TIMEOUT_S
    ) -> AbstractContextManager[bool]:
        """A single-flight lock on ``key``: ``with store.lock(key) as acquired: ...``.

        Yields True once acquired, False after ``timeout`` seconds. A holder that died (its pid
        is gone on this host, or its lease of ``lock_lease`` seconds ran out) is broken.
        """
        name = key if _LOCK_NAME.fullmatch(key) else blake3.blake3(key.encode()).hexdigest()
        self._ensure()
        return hold(
            self._io, f"{self.root}/locks/{name}.lock", timeout=timeout, lease=self.lock_lease
        )

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
        if running and not record.owner:
            record.owner = _owner.owner()
        path = self._run_path(record.id, _STARTED if running else ".json")
        try:
            data = orjson.dumps(record.to_stored())  # steps as rows: see RunRecord.to_stored
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"run record {record.id} is not JSON-able ({exc}); records hold only str, int, "
                "float, bool, None and lists/dicts of those (str keys)",
                url=self.url,
            ) from exc
        self._ensure()
        if not running and _executed(record):  # signed once per run (see _signed_run)
            data = sign_run(data, self._guard.sign_document("run"))
        try:
            self._io.write_atomic(path, (data,), False)
        except StoreError:
            if not running:
                with contextlib.suppress(OSError):
                    self._io.remove(self._run_path(record.id, _STARTED))
            raise
        if not running:
            self._io.remove(self._run_path(record.id, _STARTED))
        if self.durable and self._io.local:
            with self._pending_lock:
                self._dirty = True
        # no index row here: every query re-syncs run rows from a listing of runs/ first, so
        # the (per-step) indexing work is done only when someone asks, not on every run

    def _run_files(self) -> list[RunFile]:
        """Every run's record file: ``<id>.json``, or ``<id>.started`` for a run not finished."""
        final: dict[str, RunFile] = {}
        started: dict[str, RunFile] = {}
        for f in self._io.listdir(f"{self.root}/runs"):
            for suffix, found in ((".json", final), (_STARTED, started)):
                run_id = f.name[: -len(suffix)]
                if f.name.endswith(suffix) and _NAME.fullmatch(run_id):
                    found[run_id] = RunFile(run_id, f.size, f"{suffix}:{f.stamp}")
        return [*final.values(), *(rf for i, rf in started.items() if i not in final)]

    def _synced(self) -> Index:
        self._require()
        idx = self._idx(fresh=True)

        def read(run_id: str) -> str | None:
            data = self._read_run(run_id)
            return None if data is None else data.decode("utf-8", "replace")

        idx.sync_runs(self._run_files(), read)
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
        return [_as_read(r) for r in self._synced().run_records()]

    def metrics(self, pipeline: str | None = None) -> pd.DataFrame:
        """One row per run, to compare experiments: see :func:`mlflowkit.tracking.metrics_frame`.

        Columns ``run_id``, ``pipeline``, ``status``, ``started_at``, ``param.<name>`` per
        pipeline parameter and ``<step>.<metric>`` per metric logged; oldest run first.
        """
        from mlflowkit.tracking import metrics_frame

        return metrics_frame(self.runs(), pipeline)

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
        data = self._read_run(ids[0])
        try:
            return _as_read(RunRecord.from_dict(json.loads(data or b"")))
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(
                f"run record {ids[0]} in store {self.url} is unreadable ({exc}); delete "
                f"runs/{ids[0]}.json",
                url=self.url,
            ) from exc

    def lineage(self, digest: str) -> nx.DiGraph:
        """Artifacts, step runs and runs upstream of ``digest``, across runs.

        ``digest`` may be a unique prefix of a known digest. See
        :func:`mlflowkit.lineage.build_lineage` for the graph's nodes and attributes.
        """
        from mlflowkit.lineage import build_lineage

        idx = self._synced()
        run_ids = idx.upstream_runs(digest)
        if not run_ids and not (_NAME.fullmatch(digest) and self.has(digest)):
            found = idx.digests_with_prefix(digest)
            if len(found) > 1:
                raise StoreError(
                    f"digest prefix {digest!r} is ambiguous: {', '.join(found[:10])}",
                    digest=digest,
                    url=self.url,
                )
            if not found:
                raise StoreError(
                    f"no run produced, and the store does not hold, digest {digest!r} "
                    f"(store {self.url}); check the digest with `mlflowkit runs show`",
                    digest=digest,
                    url=self.url,
                )
            digest = found[0]
            run_ids = idx.upstream_runs(digest)
        return build_lineage(idx.run_records(run_ids), digest)

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
            if _NAME.fullmatch(name) and sub == name[:2]:
                out.append((f, name))
        return out

    def verify(self) -> list[str]:
        """Check every stored object and signed record; return what fails.

        An object is corrupt when its header or payload fails its checksum, when its header
        names another address, or when its value (deserialized) does not hash to the digest
        it is stored under. A value whose serializer or hasher is not registered in this
        process is checked up to its bytes. Corrupt objects are quarantined and listed by
        digest (first, sorted).

        Then come lines (``"untrusted object <digest>: <why>"``, ``"untrusted cache entry
        ..."``, ``"policy version ..."``, ``"audit entry ..."``, ``"untrusted artifact
        version ..."``, ``"untrusted promotion ..."``, ``"untrusted registry file ..."``) for
        every object that can run code, cache entry or pack whose signature is missing,
        invalid or made by a key that may not write here, every policy version that does not
        count, every break in the audit chain, and every artifact version or promotion whose
        record is unsigned, forged or made by a key without the role (readers ignore it).
        Untrusted objects are quarantined too, never deserialized (adopt a store made by an
        earlier version *before* verifying it: ``adopt``); the other records are left in
        place and never used.

        Raises
        ------
        StoreError
            There is no store at this url.
        """
        self._require()
        corrupt = []
        untrusted = []
        for _, digest in self._object_files("objects"):
            try:
                try:
                    got = self._load_payload(digest)
                except UntrustedObjectError as exc:
                    reason = str(exc).split(": ", 1)[-1].split(". Its serializer", 1)[0]
                    untrusted.append(f"untrusted object {digest}: {reason}")
                    self._quarantine(digest)  # never loaded; its producer runs again
                    continue
                if got is None:
                    continue
                try:
                    value = serializers.loads(got[0], got[1])
                except SerializationError:
                    continue
                self._check_value(digest, value)
            except CorruptFile:
                self._quarantine(digest)
                corrupt.append(digest)
        from mlflowkit.registry.verify import findings as registry_findings

        return sorted(corrupt) + untrusted + self._guard.findings() + registry_findings(self)

    def gc(
        self,
        *,
        keep_last: int = 10,
        pins: Iterable[str] | None = None,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> GcReport:
        """Delete objects and cache entries that neither recent runs nor pins reference.

        Parameters
        ----------
        keep_last:
            Keep everything the newest ``keep_last`` runs reference (their steps' keys,
            inputs and outputs, and their output template).
        pins:
            Digests to keep regardless; the ``pins`` of every run record are kept too.
        older_than:
            Only delete files at least this many seconds old (protects a run in flight
            elsewhere that has not written its record yet).
        dry_run:
            Report what would be deleted, delete nothing.

        Notes
        -----
        Run records are kept (they are small); an old run's output may no longer load. The
        objects of named artifact versions are always kept.
        Quarantined objects and stale temp files are deleted too, and cache packs when
        anything else was.

        Safe while runs are in progress: a live run (marked ``running``, its owner alive; on
        another host, for up to a day) holds a lease, and gc keeps every file written since
        it started, what the last finished run of its pipeline used and what the cache packs
        list (where it finds its cache hits).

        Raises
        ------
        StoreError
            ``keep_last`` is negative, or there is no store at this url.
        """
        from mlflowkit.registry.db import published_digests
        from mlflowkit.store._gc import collect

        # every version of a named artifact is kept, however old the run that made it
        pins = [*(pins or ()), *published_digests(self._idx())]
        return collect(self, keep_last=keep_last, pins=pins, older_than=older_than, dry_run=dry_run)

    def du(self) -> dict[str, Any]:
        """Counts and bytes per area: objects, cache, runs, packs, quarantine, tmp, total.

        Read from the files themselves (the truth), so it is right even after a writer was
        killed before its index rows were written.

        Raises
        ------
        StoreError
            There is no store at this url (nothing is created).
        """
        self._require()
        usage: dict[str, Any] = {}
        for area in ("objects", "cache"):
            files = [f for f in self._io.walk(f"{self.root}/{area}") if not _is_temp(f.name)]
            usage[area] = {"count": len(files), "bytes": sum(f.size for f in files)}
        runs = [
            f for f in self._io.listdir(f"{self.root}/runs") if f.name.endswith((".json", _STARTED))
        ]
        usage["runs"] = {"count": len(runs), "bytes": sum(f.size for f in runs)}
        for area in ("packs", "quarantine", "tmp"):
            files = self._io.listdir(f"{self.root}/{area}")
            usage[area] = {"count": len(files), "bytes": sum(f.size for f in files)}
        usage["total"] = {
            "count": sum(v["count"] for v in usage.values()),
            "bytes": sum(v["bytes"] for v in usage.values()),
        }
        return usage

    # named artifacts (the registry lives in ``mlflowkit.registry``) --------------------------
    def publish(
        self, name: str, value: Any, *, metadata: dict[str, Any] | None = None
    ) -> ArtifactVersion:
        """Store ``value`` and make it the next version of the artifact ``name``.

        Publishing content equal to the latest version's (same digest) makes no new version
        and returns the latest. A new version's record is signed by this store's key (its
        ``created_by``) and audited. See :doc:`/concepts/artifacts`.

        Raises
        ------
        AccessDenied
            This store's key lacks ``publisher`` in the name's namespace (nothing is written).
        RegistryError
            An invalid name or metadata that is not JSON.
        """
        from mlflowkit.registry.versions import publish

        return publish(self, name, value, metadata=metadata)

    def artifacts(self) -> list[str]:
        """Every artifact name with at least one version, sorted."""
        from mlflowkit.registry.versions import artifacts

        return artifacts(self)

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first (empty for an unknown name)."""
        from mlflowkit.registry.versions import versions

        return versions(self, name)

    def artifact(self, spec: str) -> ArtifactVersion:
        """The version ``spec`` names: ``"name"`` (latest), ``"name@3"``, ``"name@mvp"``.

        Raises
        ------
        RegistryError
            Unknown name, version or stage; the message lists what exists.
        """
        from mlflowkit.registry.versions import artifact

        return artifact(self, spec)

    def promote(
        self,
        spec: str,
        *,
        to: str,
        reason: str = "",
        gates: Iterable[Any] = (),
    ) -> Promotion:
        """Move stage ``to`` of an artifact to the version ``spec`` names, if every gate passes.

        Needs ``promoter`` for the name's namespace and stage ``to`` (else ``AccessDenied``);
        the promotion is signed by this store's key (its ``by``) and audited. See
        :func:`mlflowkit.registry.stages.promote`.
        """
        from mlflowkit.registry.stages import promote

        return promote(self, spec, to=to, reason=reason, gates=gates)

    def stage(self, name: str, stage: str) -> ArtifactVersion | None:
        """The version of ``name`` holding ``stage`` now, or None."""
        from mlflowkit.registry.stages import stage_holder

        return stage_holder(self, name, stage)

    def history(self, name: str) -> list[Promotion]:
        """Every promotion of ``name``, oldest first."""
        from mlflowkit.registry.stages import history

        return history(self, name)


def _executed(record: RunRecord) -> bool:
    """Whether a run executed a step: its record is then signed.

    The record of a fully cached run is not: signing would load the private key and its
    cryptography (~12 ms) into every cached re-run, which takes a few ms; such a record
    points only at results earlier signed runs produced (``verify`` checks the others).
    """
    return any(s.status == "executed" for s in record.steps)


def _index_writable(root: str) -> bool:
    """Whether the index next to a local store's files can be opened for writing."""
    path = os.path.join(root, "index.sqlite")
    if not os.access(root, os.W_OK):
        return False
    return not os.path.exists(path) or os.access(path, os.W_OK)


def _is_local_fs(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_temp(name: str) -> bool:
    return name.endswith(".tmp") or ".broken-" in name


def _as_read(record: RunRecord) -> RunRecord:
    """A record as readers see it: ``running`` with a provably dead owner is ``interrupted``."""
    if record.status == "running" and _owner.dead(record.owner):
        record.status = "interrupted"
    return record


def _reopen(
    url: str,
    durable: bool,
    lock_lease: float,
    storage_options: dict[str, Any],
    sync_interval: float = 1.0,
    key: str | os.PathLike[str] | None = None,
) -> Store:
    return Store(
        url,
        durable=durable,
        lock_lease=lock_lease,
        sync_interval=sync_interval,
        key=key,
        **storage_options,
    )


#: Stores of this process, synced at interpreter exit so no buffered index row is lost.
_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """At exit: stop background flushes first, then sync and close every store from here."""
    FLUSHER.stop()
    for store in list(_OPEN_STORES):
        try:
            store.close()
        except Exception:
            continue


def open_store(
    store: Store | str | os.PathLike[str] | None = None, **storage_options: Any
) -> Store:
    """A store from a ``Store`` (returned as is), a URL or path, or None (the default store).

    ``storage_options`` go to a store opened from a URL. Another implementation of
    :class:`~mlflowkit.store.base.ArtifactStore` (a test double, a plugin) is returned unchanged.

    Raises
    ------
    StoreError
        ``store`` is none of these.
    """
    if store is None or isinstance(store, (str, os.PathLike)):
        return Store(store, **storage_options)
    if isinstance(store, (Store, ArtifactStore)):  # another implementation: as it is
        return store
    raise StoreError(
        f"expected a Store, a URL string or None for store=, got {type(store).__qualname__}"
    )
