"""``PostgresIndex``: the index seam (:mod:`mlflowkit.store.index`) in a PostgreSQL database.

Layer 5; psycopg (3) is imported here only, when a store is opened with
``index="postgresql://…"``. It holds what :class:`~mlflowkit.store.sqlite_index.SqliteIndex`
holds — cache rows (objects, cache entries, runs and their steps) rebuilt from the store's files
at will, and the registry's rows, which are not a cache — for a team: many processes on many
machines write it at once.

Where the rows live: one PostgreSQL *schema* per store, ``mlflowkit_<16 hex digits of the store
URL's digest>``, so several stores can share one database (and one login) without seeing each
other's rows. The schema is created, and migrated, by mlflowkit itself.

Invariants:

* The connection URL (libpq syntax, credentials through the usual ``PG*`` variables or
  ``~/.pgpass`` when absent from it) is never shown with its password: every message uses
  :func:`redact`.
* One connection per thread and process (keyed by ``(pid, thread id)``), so a forked child never
  uses one inherited from its parent.
* Every write is one transaction; a write that meets a serialization failure or a deadlock is
  retried whole until a deadline (30 s), so concurrent writers wait rather than fail.
* A registry transaction holds a transaction-scoped advisory lock of the store's schema for its
  whole length: registry changes of all machines are serialized, as ``BEGIN IMMEDIATE`` does
  for SQLite, and a version number is read and taken under that lock; ``PRIMARY KEY (name,
  version)`` refuses a number given twice all the same.
* The schema's version is in its ``meta`` table. An older schema is migrated under an advisory
  lock (cache tables are recreated, registry tables kept); a *newer* one — written by a later
  mlflowkit — is refused with a :class:`~mlflowkit.errors.StoreError` saying to upgrade, and
  nothing is changed.
* ``replaced()`` is true when the schema was dropped (or dropped and made again) since this
  process opened it: the store then reopens and rebuilds it from the files.
* A server that cannot be reached, refuses the login, or goes away mid-write raises
  ``StoreError`` naming the redacted URL and what to check; a write that failed left nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import blake3

from mlflowkit.errors import StoreError
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

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "PostgresIndex", "redact", "schema_name"]

#: The schema this mlflowkit writes. Raise it with every change of the tables, and add the step
#: from the previous one to ``_MIGRATIONS``.
SCHEMA_VERSION = 2
RETRY_DEADLINE_S = 30.0
_T = TypeVar("_T")

#: cache tables: dropped and made again by a migration (they are rebuilt from the files)
_CACHE_TABLES = ("runs", "step_runs", "cache", "objects", "packed")

_CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, pipeline TEXT, status TEXT, started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION, file_size BIGINT, file_stamp TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT, step TEXT, key TEXT, status TEXT,
    output_digest TEXT, inputs TEXT, PRIMARY KEY (run_id, idx));
CREATE INDEX IF NOT EXISTS step_runs_output ON step_runs (output_digest);
CREATE INDEX IF NOT EXISTS step_runs_key ON step_runs (key);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, output_digest TEXT, step TEXT, stored BOOLEAN, size BIGINT,
    created_at DOUBLE PRECISION, run_id TEXT, file_size BIGINT);
CREATE INDEX IF NOT EXISTS cache_output ON cache (output_digest);
CREATE TABLE IF NOT EXISTS objects (
    digest TEXT PRIMARY KEY, size BIGINT, serializer TEXT, created_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS packed (
    name TEXT PRIMARY KEY, segment TEXT NOT NULL, off BIGINT NOT NULL, len BIGINT NOT NULL,
    checksum TEXT NOT NULL)
"""

_REGISTRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, run_id TEXT,
    created_at TEXT NOT NULL, created_by TEXT, metadata TEXT NOT NULL, record BYTEA,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS registry_stages (
    name TEXT NOT NULL, stage TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (name, stage));
CREATE TABLE IF NOT EXISTS registry_promotions (
    seq BIGINT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, from_stage TEXT,
    to_stage TEXT NOT NULL, at TEXT NOT NULL, by TEXT, reason TEXT NOT NULL, gates TEXT NOT NULL,
    record BYTEA);
CREATE INDEX IF NOT EXISTS registry_promotions_name ON registry_promotions (name, seq)
"""

#: schema version -> statements that bring the previous version's registry tables to it (the
#: cache tables are simply made again). Version 1 is the first: nothing to migrate from.
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

#: indexes added within a schema version, without raising it: mlflowkit of the same version
#: that does not know them reads and writes the tables as before (a version bump would make
#: every older client refuse a team's shared schema for a speed-up). Each is made once, under
#: the schema lock, and noted in ``meta`` as ``index:<name>``; tables are only ever dropped by
#: a change of version, which makes them again with these.
_ADDED_INDEXES: dict[str, str] = {
    # ``packed_segments`` seeks it once per segment instead of reading every row
    "packed_segment": "CREATE INDEX IF NOT EXISTS packed_segment ON packed (segment)",
}


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the only form ever shown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable PostgreSQL URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def schema_name(store_url: str) -> str:
    """The PostgreSQL schema holding the index of the store at ``store_url``."""
    return "mlflowkit_" + blake3.blake3(store_url.encode()).hexdigest()[:16]


def _lock_id(text: str) -> int:
    """A signed 64-bit advisory lock number for ``text``."""
    return int.from_bytes(blake3.blake3(text.encode()).digest()[:8], "big", signed=True)


class PostgresIndex:
    """The PostgreSQL index of one store (implements :class:`~mlflowkit.store.index.Index`).

    Parameters
    ----------
    url:
        A libpq connection URL, ``postgresql://user@host:port/database``; a password may be in
        it, in ``PGPASSWORD`` or in ``~/.pgpass`` (never shown in any message).
    store_url:
        The URL of the store whose index this is: it names the schema (:func:`schema_name`).
    """

    def __init__(self, url: str, store_url: str) -> None:
        try:
            import psycopg  # noqa: F401 - checked here, so the error names the fix
        except ImportError as exc:
            raise StoreError(
                f"the index {redact(url)!r} is a PostgreSQL database, which needs psycopg; "
                "install it with: pip install 'mlflowkit[team]'"
            ) from exc
        self.url = url
        self.shown = redact(url)
        self.schema = schema_name(store_url)
        #: this process's connections by (pid, ±thread id); closed when this index is
        #: collected, so a store dropped without ``close()`` leaves no session open
        self._conns: dict[tuple[int, int], psycopg.Connection[Any]] = {}
        weakref.finalize(self, _close_all, self._conns, os.getpid())
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._instance: str | None = None
        self._ready = False

    # connections -----------------------------------------------------------------------------
    def _conn(self) -> psycopg.Connection[Any]:
        pid = os.getpid()
        ident = (pid, threading.get_ident())
        conn = self._conns.get(ident)
        if conn is not None and not conn.closed:
            return conn
        with self._lock:
            if pid != self._pid:  # forked: the parent's connections belong to the parent
                self._conns.clear()
                self._pid = pid
            conn = self._connect()
            self._conns[ident] = conn
        if not self._ready:
            self._ensure_schema(conn)
        return conn

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StoreError(self._unreachable(exc)) from None
        conn.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def _unreachable(self, exc: BaseException) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.replace(self.url, self.shown)
        return (
            f"cannot use the PostgreSQL index {self.shown!r}: {first}. Check that the server "
            "is running and reachable at that host and port, that the database exists, and the "
            "credentials (user in the URL; password in PGPASSWORD or ~/.pgpass). Nothing was "
            "written; run again once the database is back."
        )

    def close(self) -> None:
        """Close this process's connections (they reopen on demand)."""
        with self._lock:
            conns = dict(self._conns) if os.getpid() == self._pid else {}
            self._conns.clear()
        for conn in conns.values():
            with contextlib.suppress(Exception):
                conn.close()

    def check(self) -> None:
        """Connect (and make or migrate the schema) now: ``StoreError`` if that fails."""
        self._conn()

    # single-flight ---------------------------------------------------------------------------
    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """A single-flight lock on ``key`` for every process on every machine using this index.

        A session-level advisory lock on a connection kept for locks (one per thread): it is
        released on exit, or by the server the moment the holder's connection ends — a holder
        killed with ``kill -9``, or a machine that vanished, cannot wedge it. Yields True once
        acquired, False after ``timeout`` seconds.
        """
        number = _lock_id(self.schema + ":lock:" + key)
        conn = self._lock_conn()
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = 0.005
        try:
            while True:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (number,)).fetchone()
                if row is not None and row[0]:
                    break
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        except self._operational() as exc:
            self._drop_lock_conn(conn)
            raise StoreError(self._unreachable(exc)) from None
        try:
            yield True
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (number,))
            except self._operational():
                self._drop_lock_conn(conn)  # the server let go of it with the connection

    @staticmethod
    def _operational() -> type[Exception]:
        import psycopg

        return psycopg.OperationalError

    def _lock_conn(self) -> psycopg.Connection[Any]:
        ident = (os.getpid(), -threading.get_ident())  # beside, never shared with, _conn's
        conn = self._conns.get(ident)
        if conn is None or conn.closed:
            self._conn()  # the schema exists before anything is locked
            with self._lock:
                conn = self._connect()
                self._conns[ident] = conn
        return conn

    def _drop_lock_conn(self, conn: psycopg.Connection[Any]) -> None:
        self._drop(conn)

    # schema ----------------------------------------------------------------------------------
    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        found = self._meta(conn)
        if found.get("schema") == str(SCHEMA_VERSION) and all(
            f"index:{name}" in found for name in _ADDED_INDEXES
        ):
            self._instance = found.get("instance")
            self._ready = True
            return
        self._check_not_newer(found)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.schema + ":schema"),))
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            found = dict(conn.execute("SELECT k, v FROM meta").fetchall())
            self._check_not_newer(found)
            if found.get("schema") != str(SCHEMA_VERSION):
                old = int(found.get("schema", "0") or 0)
                for table in _CACHE_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                # the tables and their indexes go: so do the notes that they were built
                conn.execute("DELETE FROM meta WHERE k = 'built' OR k LIKE 'index:%'")
                found = {k: v for k, v in found.items() if not k.startswith("index:")}
                for version in range(old + 1, SCHEMA_VERSION + 1):
                    for stmt in _MIGRATIONS.get(version, ()):
                        conn.execute(stmt)
                for stmt in (_CACHE_SCHEMA + ";" + _REGISTRY_SCHEMA).split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                instance = found.get("instance") or uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO meta VALUES ('schema', %s), ('instance', %s) "
                    "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    (str(SCHEMA_VERSION), instance),
                )
            for name, statement in _ADDED_INDEXES.items():
                if f"index:{name}" not in found:
                    conn.execute(statement)
                    conn.execute(
                        "INSERT INTO meta VALUES (%s, '1') ON CONFLICT (k) DO NOTHING",
                        (f"index:{name}",),
                    )
            self._instance = dict(conn.execute("SELECT k, v FROM meta").fetchall())["instance"]
        self._ready = True

    def _meta(self, conn: psycopg.Connection[Any]) -> dict[str, str]:
        row = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = "
            "'meta'",
            (self.schema,),
        ).fetchone()
        if row is None:
            return {}
        return dict(conn.execute("SELECT k, v FROM meta").fetchall())

    def _check_not_newer(self, found: dict[str, str]) -> None:
        try:
            theirs = int(found.get("schema", "0") or 0)
        except ValueError:
            theirs = SCHEMA_VERSION + 1
        if theirs > SCHEMA_VERSION:
            raise StoreError(
                f"the index {self.shown!r} (schema {self.schema}) was written by a newer "
                f"mlflowkit (index schema version {theirs}; this one knows up to "
                f"{SCHEMA_VERSION}). Upgrade mlflowkit on this machine: pip install -U mlflowkit. "
                "Nothing was changed."
            )

    def replaced(self) -> bool:
        """Whether the schema was dropped (or dropped and made again) since it was opened."""
        if self._instance is None:
            return False
        try:
            found = self._meta(self._conn())
        except StoreError:
            return False
        return found.get("instance") != self._instance

    def is_built(self) -> bool:
        """Whether a full rebuild from the files has completed for this index."""
        return any(r[0] == "built" for r in self.query("SELECT k FROM meta WHERE k = 'built'"))

    # reads and writes ------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Run a read-only query and return all rows."""
        return self._retry(lambda conn: conn.execute(sql, params).fetchall())

    def write(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``fn`` in one transaction, retried whole on serialization failures."""

        def attempt(conn: psycopg.Connection[Any]) -> _T:
            with conn.transaction():
                return fn(conn)

        return self._retry(attempt)

    def _retry(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        import psycopg
        from psycopg import errors

        deadline = time.monotonic() + RETRY_DEADLINE_S
        delay = 0.01
        while True:
            conn = self._conn()
            try:
                return fn(conn)
            except (errors.SerializationFailure, errors.DeadlockDetected):
                if time.monotonic() >= deadline:
                    raise
            except errors.UndefinedTable:
                # the schema was dropped under us: make it again, then retry once more
                self._ready = False
                self._ensure_schema(conn)
                if time.monotonic() >= deadline:
                    raise
            except psycopg.OperationalError as exc:
                self._drop(conn)
                raise StoreError(self._unreachable(exc)) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            for ident, known in list(self._conns.items()):
                if known is conn:
                    del self._conns[ident]
        with contextlib.suppress(Exception):
            conn.close()

    def rebuild(
        self,
        objects: Iterable[ObjectRow],
        caches: Iterable[tuple[CacheEntry, int]],
        runs: Iterable[tuple[RunFile, str]],
        *,
        clear: bool,
        packed: Iterable[PackedRow] = (),
    ) -> None:
        """See :meth:`mlflowkit.store.index.Index.rebuild`."""
        objects, caches, runs = list(objects), list(caches), list(runs)
        places = list(packed)

        def fill(conn: psycopg.Connection[Any]) -> None:
            if clear:
                for table in _CACHE_TABLES:
                    conn.execute(f"DELETE FROM {table}")
            _insert_packed(conn, places)
            _insert_objects(conn, objects)
            _insert_caches(conn, caches)
            for run_file, text in runs:
                _insert_run(conn, run_file, text)
            conn.execute(
                "INSERT INTO meta VALUES ('built', %s) ON CONFLICT (k) DO UPDATE SET v = "
                "EXCLUDED.v",
                (str(time.time()),),
            )

        self.write(fill)

    def add_batch(
        self,
        objects: Sequence[ObjectRow],
        caches: Sequence[tuple[CacheEntry, int]],
        packed: Sequence[PackedRow] = (),
    ) -> None:
        """Record many objects, cache entries and segment records' places in one transaction."""

        def apply(conn: psycopg.Connection[Any]) -> None:
            _insert_packed(conn, packed)
            _insert_objects(conn, objects)
            _insert_caches(conn, caches)

        self.write(apply)

    def find_packed(self, name: str) -> PackedRow | None:
        """Where the segment record ``name`` lives, if any."""
        rows = self.query(
            "SELECT name, segment, off, len, checksum FROM packed WHERE name = %s", (name,)
        )
        return PackedRow(*rows[0]) if rows else None

    def find_packed_many(self, names: Sequence[str]) -> dict[str, PackedRow]:
        """Where each of the segment records ``names`` that some segment holds lives."""
        rows = self.query(
            "SELECT name, segment, off, len, checksum FROM packed WHERE name = ANY(%s)",
            (list(names),),
        )
        return {r[0]: PackedRow(*r) for r in rows}

    def packed_segments(self) -> set[str]:
        """The names of the segments some record's place points into.

        Asked once per store object when a lookup misses, so its cost must not grow with the
        number of records: one seek per segment down ``packed_segment`` (``SEGMENTS_QUERY``), not
        ``SELECT DISTINCT``, which reads every row.
        """
        return {r[0] for r in self.query(SEGMENTS_QUERY, ())}

    def remove_objects(self, digests: Iterable[str]) -> None:
        """Forget objects (deleted or quarantined), with their segment records' places."""
        rows = list(digests)
        names = [f"o:{d}" for d in rows]

        def apply(conn: psycopg.Connection[Any]) -> None:
            conn.execute("DELETE FROM objects WHERE digest = ANY(%s)", (rows,))
            conn.execute("DELETE FROM packed WHERE name = ANY(%s)", (names,))

        if rows:
            self.write(apply)

    def remove_cache(self, keys: Iterable[str]) -> None:
        """Forget cache entries, with their segment records' places."""
        rows = list(keys)
        names = [f"c:{k}" for k in rows]

        def apply(conn: psycopg.Connection[Any]) -> None:
            conn.execute("DELETE FROM cache WHERE key = ANY(%s)", (rows,))
            conn.execute("DELETE FROM packed WHERE name = ANY(%s)", (names,))

        if rows:
            self.write(apply)

    def cache_keys_for(self, digest: str) -> list[str]:
        """Keys of the cache entries whose output is ``digest``."""
        return [
            r[0] for r in self.query("SELECT key FROM cache WHERE output_digest = %s", (digest,))
        ]

    # runs ------------------------------------------------------------------------------------
    def sync_runs(self, listed: Iterable[RunFile], read: Callable[[str], str | None]) -> None:
        """See :meth:`mlflowkit.store.index.Index.sync_runs`."""
        known = {
            r[0]: (r[1], r[2]) for r in self.query("SELECT id, file_size, file_stamp FROM runs")
        }
        changed, gone = runs_to_sync(known, listed, read)
        if not changed and not gone:
            return

        def apply(conn: psycopg.Connection[Any]) -> None:
            if gone:
                conn.execute("DELETE FROM runs WHERE id = ANY(%s)", (gone,))
                conn.execute("DELETE FROM step_runs WHERE run_id = ANY(%s)", (gone,))
            for f, text in changed:
                _insert_run(conn, f, text)

        self.write(apply)

    def run_records(self, run_ids: Iterable[str] | None = None) -> list[RunRecord]:
        """Run records, newest first (all of them, or those with the given ids)."""
        order = " ORDER BY started_at DESC, id DESC"
        if run_ids is None:
            rows = self.query("SELECT record FROM runs" + order)
        else:
            rows = self.query(
                "SELECT record FROM runs WHERE id = ANY(%s)" + order, (sorted(set(run_ids)),)
            )
        return [r for r in (parse_run(row[0]) for row in rows) if r is not None]

    def run_ids(self, prefix: str = "") -> list[str]:
        """Ids of the runs starting with ``prefix`` (case-sensitive), newest first."""
        return [
            r[0]
            for r in self.query(
                "SELECT id FROM runs WHERE left(id, %s) = %s ORDER BY started_at DESC, id DESC",
                (len(prefix), prefix),
            )
        ]

    def upstream_runs(self, digest: str) -> set[str]:
        """Ids of the runs holding a step run upstream of ``digest`` (transitively)."""
        return upstream_runs(
            digest,
            lambda batch: self.query(
                "SELECT run_id, inputs FROM step_runs WHERE output_digest = ANY(%s)", (batch,)
            ),
        )

    def digests_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Known digests (objects and step outputs) starting with ``prefix``, sorted."""
        rows = self.query(
            "SELECT digest FROM objects WHERE left(digest, %(n)s) = %(p)s UNION "
            "SELECT output_digest FROM step_runs WHERE left(output_digest, %(n)s) = %(p)s "
            "ORDER BY 1 LIMIT %(limit)s",
            {"n": len(prefix), "p": prefix, "limit": int(limit)},
        )
        return sorted(r[0] for r in rows)

    # the registry ----------------------------------------------------------------------------
    def registry(self, fn: Callable[[RegistryTransaction], _T]) -> _T:
        """Run ``fn`` in one transaction holding the store's registry lock."""
        lock = _lock_id(self.schema + ":registry")

        def apply(conn: psycopg.Connection[Any]) -> _T:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            return fn(_RegistryTx(conn))

        return self.write(apply)

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        """See :meth:`mlflowkit.store.index.RegistryReader.version_rows`."""
        return _version_rows(self.query, name)

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        """See :meth:`mlflowkit.store.index.RegistryReader.promotion_rows`."""
        return _promotion_rows(self.query, name)

    def stage_rows(self) -> list[StageRow]:
        """See :meth:`mlflowkit.store.index.RegistryReader.stage_rows`."""
        return _stage_rows(self.query)

    def published_digests(self) -> list[str]:
        """The digest of every version row."""
        return [r[0] for r in self.query("SELECT DISTINCT digest FROM registry_versions")]


_Query = Callable[..., list[Any]]


def _close_all(conns: dict[tuple[int, int], Any], pid: int) -> None:
    """Close the connections of a collected index (those of the process that opened them)."""
    for (owner, _), conn in list(conns.items()):
        if owner == pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()
    conns.clear()


def _version_rows(q: _Query, name: str | None) -> list[VersionRow]:
    sql = f"SELECT {VERSION_COLUMNS} FROM registry_versions"
    rows = (
        q(sql + " ORDER BY name, version")
        if name is None
        else q(sql + " WHERE name = %s ORDER BY version", (name,))
    )
    return [version_row(r) for r in rows]


def _promotion_rows(q: _Query, name: str | None) -> list[PromotionRow]:
    sql = f"SELECT {PROMOTION_COLUMNS} FROM registry_promotions"
    rows = (
        q(sql + " ORDER BY seq")
        if name is None
        else q(sql + " WHERE name = %s ORDER BY seq", (name,))
    )
    return [promotion_row(r) for r in rows]


def _stage_rows(q: _Query) -> list[StageRow]:
    return [
        stage_row(r)
        for r in q("SELECT name, stage, version FROM registry_stages ORDER BY name, stage")
    ]


class _RegistryTx:
    """:class:`~mlflowkit.store.index.RegistryTransaction` on one connection in a transaction."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        return _version_rows(self._q, name)

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        return _promotion_rows(self._q, name)

    def stage_rows(self) -> list[StageRow]:
        return _stage_rows(self._q)

    def insert_version(self, row: VersionRow) -> bool:
        cursor = self._conn.execute(
            f"INSERT INTO registry_versions ({VERSION_COLUMNS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name, version) DO NOTHING",
            version_values(row),
        )
        return cursor.rowcount == 1

    def update_version(self, name: str, version: int, created_by: str, record: bytes) -> None:
        self._conn.execute(
            "UPDATE registry_versions SET created_by = %s, record = %s "
            "WHERE name = %s AND version = %s",
            (created_by, record, name, version),
        )

    def insert_promotion(self, row: PromotionRow) -> int | None:
        seq = row.seq
        if seq is None:  # the next number: the registry lock is held, so no one else takes it
            top = self._conn.execute("SELECT max(seq) FROM registry_promotions").fetchone()
            seq = int(top[0] or 0) + 1 if top is not None else 1
        cursor = self._conn.execute(
            f"INSERT INTO registry_promotions ({PROMOTION_COLUMNS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (seq) DO NOTHING",
            promotion_values(row, seq),
        )
        return seq if cursor.rowcount == 1 else None

    def update_promotion(self, seq: int, by: str, record: bytes) -> None:
        self._conn.execute(
            "UPDATE registry_promotions SET by = %s, record = %s WHERE seq = %s", (by, record, seq)
        )

    def set_stage(self, name: str, stage: str, version: int) -> None:
        self._conn.execute(
            "INSERT INTO registry_stages (name, stage, version) VALUES (%s, %s, %s) "
            "ON CONFLICT (name, stage) DO UPDATE SET version = EXCLUDED.version",
            (name, stage, version),
        )


# rows ------------------------------------------------------------------------------------------


def _insert_packed(conn: psycopg.Connection[Any], rows: Iterable[PackedRow]) -> None:
    values = packed_values(rows)
    if values:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO packed VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "segment = EXCLUDED.segment, off = EXCLUDED.off, len = EXCLUDED.len, "
                "checksum = EXCLUDED.checksum",
                values,
            )


def _insert_objects(conn: psycopg.Connection[Any], rows: Iterable[ObjectRow]) -> None:
    values = object_values(rows)
    if values:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO objects VALUES (%s, %s, %s, %s) ON CONFLICT (digest) DO UPDATE SET "
                "size = EXCLUDED.size, serializer = EXCLUDED.serializer, "
                "created_at = EXCLUDED.created_at",
                values,
            )


def _insert_caches(conn: psycopg.Connection[Any], caches: Iterable[tuple[CacheEntry, int]]) -> None:
    values = [cache_values(e, size, bool(e.stored)) for e, size in caches]
    if values:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO cache VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO "
                "UPDATE SET output_digest = EXCLUDED.output_digest, step = EXCLUDED.step, "
                "stored = EXCLUDED.stored, size = EXCLUDED.size, created_at = "
                "EXCLUDED.created_at, run_id = EXCLUDED.run_id, file_size = EXCLUDED.file_size",
                values,
            )


def _insert_run(conn: psycopg.Connection[Any], run_file: RunFile, text: str) -> None:
    record = parse_run(text)
    if record is None:
        return
    conn.execute(
        "INSERT INTO runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
        "pipeline = EXCLUDED.pipeline, status = EXCLUDED.status, started_at = "
        "EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, file_size = "
        "EXCLUDED.file_size, file_stamp = EXCLUDED.file_stamp, record = EXCLUDED.record",
        run_values(run_file, record, text),
    )
    conn.execute("DELETE FROM step_runs WHERE run_id = %s", (run_file.run_id,))
    steps = step_values(run_file.run_id, record)
    if steps:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO step_runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", steps)
