"""A SQLite index over a store's files: fast ``runs()``, ``lineage()`` and ``du()``.

The files under the store URL are the truth; this index is a cache of them that can be thrown
away and rebuilt at any time (:meth:`Index.rebuild`). For a local store it lives next to the
files (``<root>/index.sqlite``); for a remote store in a local cache directory.

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
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from mlflowkit.records import CacheEntry, RunRecord

__all__ = ["Index", "ObjectRow", "RunFile"]

SCHEMA_VERSION = "1"
#: tables of the artifact registry (``mlflowkit.registry.db``): kept when the cache tables are
#: dropped for a new schema
REGISTRY_PREFIX = "registry_"
BUSY_TIMEOUT_S = 30.0
_T = TypeVar("_T")

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
"""


@dataclass(frozen=True)
class ObjectRow:
    """An object as the index knows it: digest, file size, serializer, creation time."""

    digest: str
    size: int
    serializer: str
    created_at: float


@dataclass(frozen=True)
class RunFile:
    """A run record file as listed: id, size and a change fingerprint."""

    run_id: str
    size: int
    stamp: str


class Index:
    """The SQLite index of one store.

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
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
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
        row = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if row is not None:
            got = conn.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if got is not None and got[0] == SCHEMA_VERSION:
                return
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

        def fill(conn: sqlite3.Connection) -> None:
            if clear:
                for table in ("runs", "step_runs", "cache", "objects"):
                    conn.execute(f"DELETE FROM {table}")
            _insert_objects(conn, objects)
            for entry, size in caches:
                _insert_cache(conn, entry, size)
            for run_file, text in runs:
                _insert_run(conn, run_file, text)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('built', ?)", (str(time.time()),))

        self.write(fill)

    # objects ---------------------------------------------------------------------------------
    def add_object(self, row: ObjectRow) -> None:
        """Record a stored object."""
        self.write(lambda conn: _insert_objects(conn, [row]))

    def add_batch(
        self, objects: Sequence[ObjectRow], caches: Sequence[tuple[CacheEntry, int]]
    ) -> None:
        """Record many objects and cache entries in one transaction."""

        def apply(conn: sqlite3.Connection) -> None:
            _insert_objects(conn, objects)
            for entry, size in caches:
                _insert_cache(conn, entry, size)

        self.write(apply)

    def remove_objects(self, digests: Iterable[str]) -> None:
        """Forget objects (deleted or quarantined)."""
        rows = [(d,) for d in digests]
        self.write(lambda conn: conn.executemany("DELETE FROM objects WHERE digest=?", rows))

    def object(self, digest: str) -> ObjectRow | None:
        """The indexed facts about one object, if known."""
        rows = self.query(
            "SELECT digest, size, serializer, created_at FROM objects WHERE digest=?", (digest,)
        )
        return ObjectRow(*rows[0]) if rows else None

    # cache -----------------------------------------------------------------------------------
    def add_cache(self, entry: CacheEntry, file_size: int) -> None:
        """Record a cache entry."""
        self.write(lambda conn: _insert_cache(conn, entry, file_size))

    def remove_cache(self, keys: Iterable[str]) -> None:
        """Forget cache entries."""
        rows = [(k,) for k in keys]
        self.write(lambda conn: conn.executemany("DELETE FROM cache WHERE key=?", rows))

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
        listed = list(listed)
        seen = {f.run_id for f in listed}
        changed: list[tuple[RunFile, str]] = []
        for f in listed:
            if known.get(f.run_id) != (f.size, f.stamp):
                text = read(f.run_id)
                if text is not None and _parse_run(text) is not None:
                    changed.append((f, text))
        gone = [run_id for run_id in known if run_id not in seen]
        if not changed and not gone:
            return

        def apply(conn: sqlite3.Connection) -> None:
            for run_id in gone:
                conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
                conn.execute("DELETE FROM step_runs WHERE run_id=?", (run_id,))
            for f, text in changed:
                _insert_run(conn, f, text)

        self.write(apply)

    def put_run(self, run_file: RunFile, text: str, record: RunRecord | None = None) -> None:
        """Record a run file just written (``record``: its parsed form, when at hand)."""
        self.write(lambda conn: _insert_run(conn, run_file, text, record))

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
        records = [r for r in (_parse_run(row[0]) for row in rows) if r is not None]
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
        runs: set[str] = set()
        seen = {digest}
        frontier = [digest]
        while frontier:
            batch, frontier = frontier[:500], frontier[500:]
            marks = ",".join("?" * len(batch))
            rows = self.query(
                f"SELECT run_id, inputs FROM step_runs WHERE output_digest IN ({marks})", batch
            )
            for run_id, inputs in rows:
                runs.add(run_id)
                for d in json.loads(inputs or "{}").values():
                    if isinstance(d, str) and d not in seen:
                        seen.add(d)
                        frontier.append(d)
        return runs

    def digests_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Known digests (objects and step outputs) that start with ``prefix``."""
        rows = self.query(
            "SELECT digest FROM objects WHERE substr(digest, 1, ?1) = ?2 UNION "
            "SELECT output_digest FROM step_runs WHERE substr(output_digest, 1, ?1) = ?2 "
            f"LIMIT {int(limit)}",
            (len(prefix), prefix),
        )
        return sorted(r[0] for r in rows)

    # usage -----------------------------------------------------------------------------------
    def usage(self) -> dict[str, dict[str, int]]:
        """Counts and bytes of objects, cache entries and runs as indexed."""
        out: dict[str, dict[str, int]] = {}
        for area, table, col in (
            ("objects", "objects", "size"),
            ("cache", "cache", "file_size"),
            ("runs", "runs", "file_size"),
        ):
            count, total = self.query(f"SELECT COUNT(*), COALESCE(SUM({col}), 0) FROM {table}")[0]
            out[area] = {"count": int(count), "bytes": int(total)}
        return out


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


def _parse_run(text: str) -> RunRecord | None:
    try:
        data = json.loads(text)
        return RunRecord.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


def _insert_objects(conn: sqlite3.Connection, rows: Iterable[ObjectRow]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)",
        [(r.digest, r.size, r.serializer, r.created_at) for r in rows],
    )


def _insert_cache(conn: sqlite3.Connection, entry: CacheEntry, file_size: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.key,
            entry.output_digest,
            entry.step,
            int(entry.stored),
            entry.size,
            entry.created_at,
            entry.run_id,
            file_size,
        ),
    )


def _insert_run(
    conn: sqlite3.Connection, run_file: RunFile, text: str, record: RunRecord | None = None
) -> None:
    if record is None:
        record = _parse_run(text)
    if record is None:
        return
    conn.execute(
        "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_file.run_id,
            record.pipeline,
            record.status,
            record.started_at,
            record.finished_at,
            run_file.size,
            run_file.stamp,
            text,
        ),
    )
    conn.execute("DELETE FROM step_runs WHERE run_id=?", (run_file.run_id,))
    conn.executemany(
        "INSERT OR REPLACE INTO step_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_file.run_id,
                i,
                s.name,
                s.step,
                s.key,
                s.status,
                s.output_digest,
                json.dumps(s.inputs, sort_keys=True),
            )
            for i, s in enumerate(record.steps)
        ],
    )
