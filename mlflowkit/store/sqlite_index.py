"""``SqliteIndex``: the index seam (:mod:`mlflowkit.store.index`) in one SQLite file.

Layer 5. The files under the store URL are the truth for objects, cache entries and runs; those
rows are a cache of them that can be thrown away and rebuilt at any time
(:meth:`SqliteIndex.rebuild`). The registry's rows are not (see below). For a local store the
file lives next to the store's files (``<root>/index.sqlite``); for a remote store in a local
cache directory. All the SQL of the store and of the registry is in this module.

Registry tables (created by the first registry transaction, ``CREATE TABLE IF NOT EXISTS``, so
existing stores keep working and two processes creating them at once is harmless)::

    registry_versions   (name, version) -> digest, run_id, created_at, created_by, metadata,
                                           record
    registry_stages     (name, stage)   -> version            a stage is a pointer
    registry_promotions seq -> name, version, from_stage, to_stage, at, by, reason, gates,
                               record

Invariants:

* One connection per thread and process: connections are keyed by ``(pid, thread id)``, so a
  forked child opens its own and never uses (or closes) one inherited from its parent.
* WAL journal, ``busy_timeout`` of 30 s, and every write in ``BEGIN IMMEDIATE``: concurrent
  processes wait for each other instead of failing with "database is locked"; a write that
  still finds the database busy is retried until the same deadline.
* Run rows carry the size and a fingerprint (mtime, etag) of their file; :meth:`Index.sync_runs`
  compares them with a directory listing, so runs written by other machines or processes show
  up (and deleted ones disappear) without a full rebuild.
* A missing, unreadable or older-schema index file is recreated and rebuilt from the files.
  The artifact registry's tables (``registry_*``: versions, stages, promotions) are not a
  cache of the files: a schema change keeps them, and ``rebuild(clear=True)`` leaves them.
* A registry transaction is one ``BEGIN IMMEDIATE``: a version number is read and taken under
  the same write lock, and ``PRIMARY KEY (name, version)`` refuses a number given twice.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import blake3

from mlflowkit.records import CacheEntry, RunRecord
from mlflowkit.store.index import (
    ObjectRow,
    PackedRow,
    PromotionRow,
    RegistryTransaction,
    RunFile,
    StageRow,
    VersionRow,
)
from mlflowkit.store.index_rows import (
    PROMOTION_COLUMNS,
    SEGMENTS_QUERY,
    VERSION_COLUMNS,
    cache_values,
    object_values,
    packed_values,
    parse_run,
    promotion_row,
    promotion_values,
    run_values,
    runs_to_sync,
    stage_row,
    step_values,
    upstream_runs,
    version_row,
    version_values,
)

__all__ = ["SqliteIndex", "open_for_store"]

#: 3: packed rows indexed by segment (``packed_segments``); 4: no ``objects`` row for an object
#: a segment holds (its ``packed`` row says it is there: one index insert less per small value)
SCHEMA_VERSION = "4"
#: tables of the artifact registry (``mlflowkit.registry.db``): kept when the cache tables are
#: dropped for a new schema
REGISTRY_PREFIX = "registry_"
BUSY_TIMEOUT_S = 30.0
_T = TypeVar("_T")
#: how the name of an object's place in a segment starts (``PackedRow``)
_OBJECT_PLACE = "o:"
#: sorts after any character of a name: ``[p, p + _TEXT_MAX)`` holds the names starting with p
_TEXT_MAX = "\U0010ffff"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, pipeline TEXT, status TEXT, started_at REAL, finished_at REAL,
    file_size INTEGER, file_stamp TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT, step TEXT, key TEXT, status TEXT,
    output_digest TEXT, inputs TEXT, PRIMARY KEY (run_id, idx));
CREATE INDEX IF NOT EXISTS step_runs_output ON step_runs (output_digest);
CREATE INDEX IF NOT EXISTS step_runs_key ON step_runs (key);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, output_digest TEXT, step TEXT, stored INTEGER, size INTEGER,
    created_at REAL, run_id TEXT, file_size INTEGER);
CREATE INDEX IF NOT EXISTS cache_output ON cache (output_digest);
CREATE TABLE IF NOT EXISTS objects (
    digest TEXT PRIMARY KEY, size INTEGER, serializer TEXT, created_at REAL);
CREATE TABLE IF NOT EXISTS packed (
    name TEXT PRIMARY KEY, segment TEXT NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL,
    checksum TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS packed_segment ON packed (segment);
"""


class SqliteIndex:
    """The SQLite index of one store (implements :class:`~mlflowkit.store.index.Index`).

    Parameters
    ----------
    path:
        The database file. Its directory is created if needed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}
        self._inherited: list[sqlite3.Connection] = []  # from a parent process: never touched
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._ino: int | None = None
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    # connections -----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        ident = (pid, threading.get_ident())
        conn = self._conns.get(ident)
        if conn is not None:
            return conn
        with self._lock:
            if pid != self._pid:  # forked: the parent's connections must not be used or closed
                self._inherited.extend(self._conns.values())
                self._conns = {}
                self._pid = pid
            conn = self._open()
            self._conns[ident] = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError:
            # not a database (or an unreadable one): it is only a cache, start afresh
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path + suffix)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:  # ``timeout`` is the busy timeout; WAL, once set, is kept in the file
            conn.execute("PRAGMA synchronous = NORMAL")
            self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        try:
            self._ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            self._ino = None
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        """Make the tables of this version unless they are there (one query when they are).

        A database of this schema was put in WAL mode when its tables were made (the mode is
        kept in the file): only a new or outdated one is set to it.
        """
        try:
            got = conn.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        except sqlite3.OperationalError:  # no meta table: a new database
            got = None
        if got is not None and got[0] == SCHEMA_VERSION:
            return
        _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        with _immediate(conn):
            got = None
            if conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone():
                got = conn.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if got is not None and got[0] == SCHEMA_VERSION:
                return
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'"
            ).fetchall():
                if name.startswith(REGISTRY_PREFIX) or name == "sqlite_sequence":
                    continue  # the registry's rows are not a cache: never dropped
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Forget every connection; close this thread's and those of threads that have ended.

        A connection of another live thread may be in use there right now (closing it under
        that thread crashes SQLite): it is only forgotten here, and closes when that thread
        lets go of it.
        """
        me = threading.get_ident()
        with self._lock:
            conns = self._conns if os.getpid() == self._pid else {}
            self._conns = {}
        alive = {t.ident for t in threading.enumerate()}
        for (_, ident), conn in conns.items():
            if ident == me or ident not in alive:
                conn.close()

    def replaced(self) -> bool:
        """Whether the database file was deleted or replaced since it was opened here."""
        if self._ino is None:
            return not os.path.exists(self.path)
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    # state -----------------------------------------------------------------------------------
    def is_built(self) -> bool:
        """Whether a full rebuild from the files has completed for this database."""
        row = self._conn().execute("SELECT v FROM meta WHERE k='built'").fetchone()
        return row is not None

    def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (retried while busy)."""
        conn = self._conn()

        def attempt() -> _T:
            with _immediate(conn):
                return fn(conn)

        return _retry_busy(attempt)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read-only query and return all rows."""
        conn = self._conn()
        return _retry_busy(lambda: conn.execute(sql, params).fetchall())

    def rebuild(
        self,
        objects: Iterable[ObjectRow],
        caches: Iterable[tuple[CacheEntry, int]],
        runs: Iterable[tuple[RunFile, str]],
        *,
        clear: bool,
        packed: Iterable[PackedRow] = (),
    ) -> None:
        """Fill the index from scanned files and mark it built.

        Parameters
        ----------
        objects, caches, runs:
            What a scan of the files found (cache entries with their file size, run files
            with their JSON text).
        clear:
            Delete every row first (an explicit reindex); otherwise rows are upserted, so a
            concurrent writer's rows are never lost.
        """
        objects, caches, runs = list(objects), list(caches), list(runs)
        places = list(packed)

        def fill(conn: sqlite3.Connection) -> None:
            if clear:
                for table in ("runs", "step_runs", "cache", "objects", "packed"):
                    conn.execute(f"DELETE FROM {table}")
            _insert_packed(conn, places)
            _insert_objects(conn, objects, places)
            _insert_caches(conn, caches)
            for run_file, text in runs:
                _insert_run(conn, run_file, text)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('built', ?)", (str(time.time()),))

        self.write(fill)

    # objects ---------------------------------------------------------------------------------
    def add_batch(
        self,
        objects: Sequence[ObjectRow],
        caches: Sequence[tuple[CacheEntry, int]],
        packed: Sequence[PackedRow] = (),
    ) -> None:
        """Record many objects, cache entries and segment records' places in one transaction."""

        def apply(conn: sqlite3.Connection) -> None:
            _insert_packed(conn, packed)
            _insert_objects(conn, objects, packed)
            _insert_caches(conn, caches)

        self.write(apply)

    def find_packed(self, name: str) -> PackedRow | None:
        """Where the segment record ``name`` lives, if any."""
        rows = self.query(
            "SELECT name, segment, off, len, checksum FROM packed WHERE name=?", (name,)
        )
        return PackedRow(*rows[0]) if rows else None

    def find_packed_many(self, names: Sequence[str]) -> dict[str, PackedRow]:
        """Where each of the segment records ``names`` that some segment holds lives."""
        out: dict[str, PackedRow] = {}
        for i in range(0, len(names), 500):
            part = list(names[i : i + 500])
            marks = ",".join("?" * len(part))
            for row in self.query(
                f"SELECT name, segment, off, len, checksum FROM packed WHERE name IN ({marks})",
                part,
            ):
                out[row[0]] = PackedRow(*row)
        return out

    def packed_segments(self) -> set[str]:
        """The names of the segments some record's place points into.

        Asked once per store object when a lookup misses (``StoreCore._reconcile``), so its
        cost must not grow with the number of records: each name is found by one step down
        the ``packed_segment`` index from the one before (``SEGMENTS_QUERY``), not by reading
        every row (``SELECT DISTINCT`` took 27 ms at 100,000 records, this 0.3 ms).
        """
        return {r[0] for r in self.query(SEGMENTS_QUERY)}

    def remove_objects(self, digests: Iterable[str]) -> None:
        """Forget objects (deleted or quarantined), with their segment records' places."""
        rows = [(d,) for d in digests]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM objects WHERE digest=?", rows)
            conn.executemany("DELETE FROM packed WHERE name='o:' || ?", rows)

        self.write(apply)

    # cache -----------------------------------------------------------------------------------
    def remove_cache(self, keys: Iterable[str]) -> None:
        """Forget cache entries, with their segment records' places."""
        rows = [(k,) for k in keys]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM cache WHERE key=?", rows)
            conn.executemany("DELETE FROM packed WHERE name='c:' || ?", rows)

        self.write(apply)

    def cache_keys_for(self, digest: str) -> list[str]:
        """Keys of the cache entries whose output is ``digest``."""
        return [r[0] for r in self.query("SELECT key FROM cache WHERE output_digest=?", (digest,))]

    # runs ------------------------------------------------------------------------------------
    def sync_runs(self, listed: Iterable[RunFile], read: Callable[[str], str | None]) -> None:
        """Bring the run rows in line with a listing of the run files.

        Files that are new or changed (size or fingerprint) are read with ``read(run_id)``;
        rows whose file is gone are deleted. Nothing is written when nothing changed.
        """
        known = {
            r[0]: (r[1], r[2]) for r in self.query("SELECT id, file_size, file_stamp FROM runs")
        }
        changed, gone = runs_to_sync(known, listed, read)
        if not changed and not gone:
            return

        def apply(conn: sqlite3.Connection) -> None:
            for run_id in gone:
                conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
                conn.execute("DELETE FROM step_runs WHERE run_id=?", (run_id,))
            for f, text in changed:
                _insert_run(conn, f, text)

        self.write(apply)

    def run_records(self, run_ids: Iterable[str] | None = None) -> list[RunRecord]:
        """Run records, newest first (all of them, or those with the given ids)."""
        order = " ORDER BY started_at DESC, id DESC"
        if run_ids is None:
            rows = self.query("SELECT record FROM runs" + order)
        else:
            ids = sorted(set(run_ids))
            rows = []
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                rows += self.query(f"SELECT record FROM runs WHERE id IN ({marks})", chunk)
        records = [r for r in (parse_run(row[0]) for row in rows) if r is not None]
        if run_ids is not None:
            records.sort(key=lambda r: (r.started_at, r.id), reverse=True)
        return records

    def run_ids(self, prefix: str = "") -> list[str]:
        """Ids of the runs starting with ``prefix`` (case-sensitive), newest first."""
        return [
            r[0]
            for r in self.query(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started_at DESC, id DESC",
                (len(prefix), prefix),
            )
        ]

    def upstream_runs(self, digest: str) -> set[str]:
        """Ids of the runs holding a step run upstream of ``digest`` (transitively)."""

        def producers(batch: list[str]) -> list[Any]:
            marks = ",".join("?" * len(batch))
            return self.query(
                f"SELECT run_id, inputs FROM step_runs WHERE output_digest IN ({marks})", batch
            )

        return upstream_runs(digest, producers)

    def digests_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Known digests (objects and step outputs) that start with ``prefix``."""
        # segment-held objects have a ``packed`` row only: found by a range of its key
        rows = self.query(
            "SELECT digest FROM objects WHERE substr(digest, 1, ?1) = ?2 UNION "
            "SELECT substr(name, 3) FROM packed WHERE name >= ?3 AND name < ?4 UNION "
            "SELECT output_digest FROM step_runs WHERE substr(output_digest, 1, ?1) = ?2 "
            f"LIMIT {int(limit)}",
            (len(prefix), prefix, _OBJECT_PLACE + prefix, _OBJECT_PLACE + prefix + _TEXT_MAX),
        )
        return sorted(r[0] for r in rows)

    # the registry ------------------------------------------------------------------------------
    def registry(self, fn: Callable[[RegistryTransaction], _T]) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (the registry tables made first)."""

        def apply(conn: sqlite3.Connection) -> _T:
            _create_registry(conn)  # a no-op unless missing (cheap: a schema lookup)
            return fn(_RegistryTx(conn))

        return self.write(apply)

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        """See :meth:`mlflowkit.store.index.RegistryReader.version_rows`."""
        return _version_rows(self._read_registry, name)

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        """See :meth:`mlflowkit.store.index.RegistryReader.promotion_rows`."""
        return _promotion_rows(self._read_registry, name)

    def stage_rows(self) -> list[StageRow]:
        """See :meth:`mlflowkit.store.index.RegistryReader.stage_rows`."""
        return _stage_rows(self._read_registry)

    def published_digests(self) -> list[str]:
        """The digest of every version row; reads, never creates."""
        return [r[0] for r in self._read_registry("SELECT DISTINCT digest FROM registry_versions")]

    def _read_registry(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read of the registry tables: none when they were never made."""
        try:
            return self.query(sql, params)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


# where a store's index lives ------------------------------------------------------------------

_private_files: dict[str, str] = {}
_private_lock = threading.Lock()


def open_for_store(url: str, local_root: str | None, protocol: str) -> SqliteIndex:
    """The index of the store at ``url``: where it lives depends on the store.

    A local store (``local_root``) keeps ``index.sqlite`` next to its files; one that cannot
    be written there is read through a private copy. A ``memory://`` store's index lives and
    dies with this process; any other remote store's is in ``$MLFLOWKIT_CACHE_DIR/index/``.
    """
    if local_root is not None:
        path = os.path.join(local_root, "index.sqlite")
        return SqliteIndex(path if _writable(local_root) else _read_only_copy(local_root))
    name = blake3.blake3(url.encode()).hexdigest()[:32] + ".sqlite"
    if protocol == "memory":
        return SqliteIndex(_private_file(url, name))
    base = os.environ.get("MLFLOWKIT_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "mlflowkit"
    )
    return SqliteIndex(os.path.join(base, "index", name))


def _writable(root: str) -> bool:
    """Whether the index next to a local store's files can be opened for writing."""
    path = os.path.join(root, "index.sqlite")
    if not os.access(root, os.W_OK):
        return False
    return not os.path.exists(path) or os.access(path, os.W_OK)


def _private_file(key: str, name: str) -> str:
    """An index file of this process only (in a temp folder removed at exit)."""
    with _private_lock:
        if key not in _private_files:
            import shutil
            import tempfile

            folder = tempfile.mkdtemp(prefix="mlflowkit-index-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _private_files[key] = os.path.join(folder, name)
        return _private_files[key]


def _read_only_copy(local_root: str) -> str:
    """A private index for a store that cannot be written, seeded from the store's own.

    The store's ``index.sqlite`` is copied (opened ``immutable``: no lock, no -wal/-shm
    files are made) when it can be read; run rows are then re-synced from the files as
    always, and anything else missing is rebuilt from them.
    """
    path = _private_file("ro:" + local_root, "index.sqlite")
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


# the registry's tables -------------------------------------------------------------------------

_REGISTRY_TABLES = """
CREATE TABLE IF NOT EXISTS registry_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, run_id TEXT,
    created_at TEXT NOT NULL, created_by TEXT, metadata TEXT NOT NULL, record BLOB,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS registry_stages (
    name TEXT NOT NULL, stage TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (name, stage));
CREATE TABLE IF NOT EXISTS registry_promotions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version INTEGER NOT NULL,
    from_stage TEXT, to_stage TEXT NOT NULL, at TEXT NOT NULL, by TEXT, reason TEXT NOT NULL,
    gates TEXT NOT NULL, record BLOB);
CREATE INDEX IF NOT EXISTS registry_promotions_name ON registry_promotions (name, seq);
"""
_Query = Callable[[str, Sequence[Any]], list[Any]]


def _create_registry(conn: sqlite3.Connection) -> None:
    for stmt in _REGISTRY_TABLES.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    for table in ("registry_versions", "registry_promotions"):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        if "record" not in columns:  # an index made before records were signed
            conn.execute(f"ALTER TABLE {table} ADD COLUMN record BLOB")


def _version_rows(q: _Query, name: str | None) -> list[VersionRow]:
    sql = f"SELECT {VERSION_COLUMNS} FROM registry_versions"
    rows = (
        q(sql + " ORDER BY name, version", ())
        if name is None
        else q(sql + " WHERE name=? ORDER BY version", (name,))
    )
    return [version_row(r) for r in rows]


def _promotion_rows(q: _Query, name: str | None) -> list[PromotionRow]:
    sql = f"SELECT {PROMOTION_COLUMNS} FROM registry_promotions"
    rows = (
        q(sql + " ORDER BY seq", ())
        if name is None
        else q(sql + " WHERE name=? ORDER BY seq", (name,))
    )
    return [promotion_row(r) for r in rows]


def _stage_rows(q: _Query) -> list[StageRow]:
    rows = q("SELECT name, stage, version FROM registry_stages ORDER BY name, stage", ())
    return [stage_row(r) for r in rows]


class _RegistryTx:
    """:class:`~mlflowkit.store.index.RegistryTransaction` on one connection inside a write."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _q(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        return _version_rows(self._q, name)

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        return _promotion_rows(self._q, name)

    def stage_rows(self) -> list[StageRow]:
        return _stage_rows(self._q)

    def insert_version(self, row: VersionRow) -> bool:
        cursor = self._conn.execute(
            f"INSERT OR IGNORE INTO registry_versions ({VERSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            version_values(row),
        )
        return cursor.rowcount == 1

    def update_version(self, name: str, version: int, created_by: str, record: bytes) -> None:
        self._conn.execute(
            "UPDATE registry_versions SET created_by=?, record=? WHERE name=? AND version=?",
            (created_by, record, name, version),
        )

    def insert_promotion(self, row: PromotionRow) -> int | None:
        cursor = self._conn.execute(
            f"INSERT OR IGNORE INTO registry_promotions ({PROMOTION_COLUMNS}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            promotion_values(row, row.seq),
        )
        if cursor.rowcount != 1:
            return None
        return int(row.seq if row.seq is not None else cursor.lastrowid or 0)

    def update_promotion(self, seq: int, by: str, record: bytes) -> None:
        self._conn.execute(
            "UPDATE registry_promotions SET by=?, record=? WHERE seq=?", (by, record, seq)
        )

    def set_stage(self, name: str, stage: str, version: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO registry_stages (name, stage, version) VALUES (?,?,?)",
            (name, stage, version),
        )


# helpers --------------------------------------------------------------------------------------


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _retry_busy(fn: Callable[[], _T]) -> _T:
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _insert_packed(conn: sqlite3.Connection, rows: Iterable[PackedRow]) -> None:
    conn.executemany("INSERT OR REPLACE INTO packed VALUES (?, ?, ?, ?, ?)", packed_values(rows))


def _insert_objects(
    conn: sqlite3.Connection, rows: Iterable[ObjectRow], places: Sequence[PackedRow]
) -> None:
    """Object rows, but none for an object whose place in a segment comes with them: its
    ``packed`` row already says the store holds it (``digests_with_prefix`` reads both), and
    each row is one more insert at a random spot of a B-tree, which is what a commit pays for
    once the index outgrows memory (a page written per row)."""
    held = {p.name[len(_OBJECT_PLACE) :] for p in places if p.name.startswith(_OBJECT_PLACE)}
    if held:
        rows = [r for r in rows if r.digest not in held]
    conn.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)", object_values(rows))


def _insert_caches(conn: sqlite3.Connection, caches: Iterable[tuple[CacheEntry, int]]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [cache_values(entry, size, int(entry.stored)) for entry, size in caches],
    )


def _insert_run(
    conn: sqlite3.Connection, run_file: RunFile, text: str, record: RunRecord | None = None
) -> None:
    if record is None:
        record = parse_run(text)
    if record is None:
        return
    conn.execute(
        "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        run_values(run_file, record, text),
    )
    conn.execute("DELETE FROM step_runs WHERE run_id=?", (run_file.run_id,))
    conn.executemany(
        "INSERT OR REPLACE INTO step_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        step_values(run_file.run_id, record),
    )
