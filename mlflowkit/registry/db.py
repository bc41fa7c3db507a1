"""The registry's tables in the store's index, and every query and transaction on them.

Tables (created on first use, ``CREATE TABLE IF NOT EXISTS``, so existing stores keep working
and two processes creating them at once is harmless)::

    registry_versions   (name, version) -> digest, run_id, created_at, created_by, metadata
    registry_stages     (name, stage)   -> version            a stage is a pointer
    registry_promotions seq -> name, version, from_stage, to_stage, at, by, reason, gates

Invariants
----------
* Every change is one ``BEGIN IMMEDIATE`` transaction (``Index.write``): concurrent writers
  (threads, processes) wait for each other, a version number is read and taken under the same
  write lock, and ``PRIMARY KEY (name, version)`` refuses a number given twice. A process killed
  mid-change leaves the old state or the new one, never a half-made one.
* Unlike the index's other tables these rows are not a cache of the store's files: the index
  never drops them when it rebuilds (see ``mlflowkit.store.index``).
* Only this module writes SQL for the registry; the rest of the registry speaks in records.
* Each new version and promotion is also written as a file of the store (``journal``) inside
  its transaction, and a new or lost index is filled back from those files on first use.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mlflowkit.errors import RegistryError
from mlflowkit.registry import journal
from mlflowkit.registry.names import STAGES
from mlflowkit.registry.records import ArtifactVersion, GateResult, Promotion, utc_now

if TYPE_CHECKING:
    from mlflowkit.store.index import Index

__all__ = [
    "TABLES",
    "history",
    "index_of",
    "insert_version",
    "latest",
    "move_stage",
    "names",
    "published_digests",
    "stage_holders",
    "version_row",
    "versions",
]

_T = TypeVar("_T")

TABLES = """
CREATE TABLE IF NOT EXISTS registry_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, run_id TEXT,
    created_at TEXT NOT NULL, created_by TEXT, metadata TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS registry_stages (
    name TEXT NOT NULL, stage TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (name, stage));
CREATE TABLE IF NOT EXISTS registry_promotions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version INTEGER NOT NULL,
    from_stage TEXT, to_stage TEXT NOT NULL, at TEXT NOT NULL, by TEXT, reason TEXT NOT NULL,
    gates TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS registry_promotions_name ON registry_promotions (name, seq);
"""

_READY: weakref.WeakSet[Index] = weakref.WeakSet()


def _create(conn: sqlite3.Connection) -> None:
    for stmt in TABLES.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def index_of(store: Any) -> Index:
    """The store's index, with the registry's tables in it.

    Raises
    ------
    RegistryError
        The store keeps no index (another implementation of the store contract).
    """
    get = getattr(store, "_idx", None)
    if get is None:
        raise RegistryError(
            f"store {getattr(store, 'url', store)!r} keeps no index, so it cannot hold named "
            f"artifacts: use an mk.Store (a folder or an fsspec URL)"
        )
    # fresh: an index file deleted or replaced since it was opened is opened again (and then
    # filled back from the journal); flush=False: buffered cache rows are not needed here
    idx: Index = get(fresh=True, flush=False)
    if idx not in _READY:

        def prepare(conn: sqlite3.Connection) -> None:
            _create(conn)
            if conn.execute("SELECT 1 FROM registry_versions LIMIT 1").fetchone() is None:
                journal.restore(store, conn)  # a new or lost index: load the store's files

        idx.write(prepare)
        _READY.add(idx)
    return idx


def _write(idx: Index, fn: Callable[[sqlite3.Connection], _T]) -> _T:
    def apply(conn: sqlite3.Connection) -> _T:
        _create(conn)  # a no-op unless the tables were dropped since (cheap: schema lookup)
        return fn(conn)

    return idx.write(apply)


_COLUMNS = "name, version, digest, run_id, created_at, created_by, metadata"


def _version(row: Any, stages: dict[int, str], store: Any) -> ArtifactVersion:
    name, version, digest, run_id, created_at, created_by, metadata = row
    return ArtifactVersion(
        name=name,
        version=int(version),
        digest=digest,
        run_id=run_id,
        created_at=created_at,
        created_by=created_by,
        metadata=json.loads(metadata),
        metrics=_producing_metrics(store, run_id),
        stage=stages.get(int(version)),
        _store=store,
    )


def _producing_metrics(store: Any, run_id: str | None) -> dict[str, Any]:
    """The metrics of the run that published a version (``{}`` without one, or before its
    record is written)."""
    if store is None or run_id is None:
        return {}
    from mlflowkit.errors import StoreError
    from mlflowkit.tracking import run_metrics

    try:
        record = store.run(run_id)
    except StoreError:
        return {}
    return dict(run_metrics(record.steps))


def _highest(holders: dict[str, int]) -> dict[int, str]:
    """version -> the highest stage it holds."""
    out: dict[int, str] = {}
    for stage in STAGES:  # lowest first: a higher stage overwrites
        if stage in holders:
            out[holders[stage]] = stage
    return out


def stage_holders(idx: Index, name: str) -> dict[str, int]:
    """stage -> the version holding it now."""
    rows = idx.query("SELECT stage, version FROM registry_stages WHERE name=?", (name,))
    return {stage: int(version) for stage, version in rows}


def published_digests(idx: Index) -> list[str]:
    """The digest of every version of every name (for gc to keep); reads, never creates."""
    exists = idx.query(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='registry_versions'"
    )
    if not exists:
        return []
    return [r[0] for r in idx.query("SELECT DISTINCT digest FROM registry_versions")]


def names(idx: Index) -> list[str]:
    """Every artifact name with at least one version, sorted."""
    rows = idx.query("SELECT DISTINCT name FROM registry_versions ORDER BY name")
    return [r[0] for r in rows]


def versions(idx: Index, name: str, store: Any) -> list[ArtifactVersion]:
    """Every version of ``name``, oldest first."""
    rows = idx.query(
        f"SELECT {_COLUMNS} FROM registry_versions WHERE name=? ORDER BY version", (name,)
    )
    stages = _highest(stage_holders(idx, name))
    return [_version(r, stages, store) for r in rows]


def version_row(idx: Index, name: str, version: int, store: Any) -> ArtifactVersion | None:
    """One version, or None."""
    rows = idx.query(
        f"SELECT {_COLUMNS} FROM registry_versions WHERE name=? AND version=?", (name, version)
    )
    if not rows:
        return None
    return _version(rows[0], _highest(stage_holders(idx, name)), store)


def latest(idx: Index, name: str, store: Any) -> ArtifactVersion | None:
    """The newest version of ``name``, or None."""
    rows = idx.query(
        f"SELECT {_COLUMNS} FROM registry_versions WHERE name=? ORDER BY version DESC LIMIT 1",
        (name,),
    )
    if not rows:
        return None
    return _version(rows[0], _highest(stage_holders(idx, name)), store)


def insert_version(
    idx: Index,
    name: str,
    digest: str,
    *,
    run_id: str | None,
    metadata: dict[str, Any],
    created_by: str | None = None,
    store: Any = None,
) -> tuple[ArtifactVersion, bool]:
    """Add a version of ``name`` holding ``digest``, unless the latest holds it already.

    Returns the version and whether it is new. One transaction: the number is read and taken
    under the index's write lock.
    """
    meta_text = json.dumps(metadata, sort_keys=True)

    def apply(conn: sqlite3.Connection) -> tuple[Any, bool]:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM registry_versions WHERE name=? ORDER BY version DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is not None and row[2] == digest:
            return row, False
        number = 1 if row is None else int(row[1]) + 1
        new = (name, number, digest, run_id, utc_now(), created_by, meta_text)
        conn.execute(f"INSERT INTO registry_versions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", new)
        journal.version_file(store, dict(zip(_COLUMNS.split(", "), new, strict=True)))
        return new, True

    row, made = _write(idx, apply)
    return _version(row, _highest(stage_holders(idx, name)), store), made


def _promotion(row: Any) -> Promotion:
    name, version, from_stage, to_stage, at, by, reason, gates = row
    return Promotion(
        name=name,
        version=int(version),
        from_stage=from_stage,
        to_stage=to_stage,
        at=at,
        by=by,
        reason=reason,
        gates=tuple(GateResult(**g) for g in json.loads(gates)),
    )


_PROMOTION_COLUMNS = "name, version, from_stage, to_stage, at, by, reason, gates"


def history(idx: Index, name: str) -> list[Promotion]:
    """Every promotion of ``name``, oldest first."""
    rows = idx.query(
        f"SELECT {_PROMOTION_COLUMNS} FROM registry_promotions WHERE name=? ORDER BY seq",
        (name,),
    )
    return [_promotion(r) for r in rows]


def move_stage(
    idx: Index,
    name: str,
    version: int,
    to_stage: str,
    *,
    check: Callable[[dict[str, int], list[Promotion]], str | None],
    reason: str,
    gates: list[GateResult],
    by: str | None = None,
    store: Any = None,
) -> Promotion:
    """Point ``to_stage`` of ``name`` at ``version`` and record the promotion, in one transaction.

    ``check(holders, history)`` runs inside the transaction on the state it will change and
    returns the highest stage the version held before; it raises to refuse (nothing changes).
    """

    def apply(conn: sqlite3.Connection) -> Promotion:
        holders = {
            s: int(v)
            for s, v in conn.execute(
                "SELECT stage, version FROM registry_stages WHERE name=?", (name,)
            ).fetchall()
        }
        past = [
            _promotion(r)
            for r in conn.execute(
                f"SELECT {_PROMOTION_COLUMNS} FROM registry_promotions WHERE name=? ORDER BY seq",
                (name,),
            ).fetchall()
        ]
        from_stage = check(holders, past)
        promotion = Promotion(
            name=name,
            version=version,
            from_stage=from_stage,
            to_stage=to_stage,
            at=utc_now(),
            by=by,
            reason=reason,
            gates=tuple(gates),
        )
        conn.execute(
            "INSERT OR REPLACE INTO registry_stages (name, stage, version) VALUES (?,?,?)",
            (name, to_stage, version),
        )
        row = (
            name,
            version,
            from_stage,
            to_stage,
            promotion.at,
            by,
            reason,
            json.dumps([g.to_dict() for g in gates]),
        )
        cursor = conn.execute(
            f"INSERT INTO registry_promotions ({_PROMOTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            row,
        )
        seq = int(cursor.lastrowid or 0)
        journal.promotion_file(
            store, seq, dict(zip(_PROMOTION_COLUMNS.split(", "), row, strict=True))
        )
        return promotion

    return _write(idx, apply)
