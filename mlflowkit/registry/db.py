"""The registry's tables in the store's index, and every query and transaction on them.

Tables (created on first use, ``CREATE TABLE IF NOT EXISTS``, so existing stores keep working
and two processes creating them at once is harmless)::

    registry_versions   (name, version) -> digest, run_id, created_at, created_by, metadata,
                                           record
    registry_stages     (name, stage)   -> version            a stage is a pointer
    registry_promotions seq -> name, version, from_stage, to_stage, at, by, reason, gates,
                               record

``record`` is the signed record (``signed``) the row was made from; readers build versions and
promotions from it, never from the other columns, and derive the stages from the valid
promotions (``registry_stages`` is written but never believed).

Invariants
----------
* Every change is one ``BEGIN IMMEDIATE`` transaction (``Index.write``): concurrent writers
  (threads, processes) wait for each other, a version number is read and taken under the same
  write lock, and ``PRIMARY KEY (name, version)`` refuses a number given twice. A process killed
  mid-change leaves the old state or the new one, never a half-made one.
* A row whose record does not count (``signed.judge``: forged, edited, unsigned in an owned
  store, or made by a key without the role) is ignored by every reader, as is a promotion of
  a version that does not count.
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
from collections import abc as cabc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mlflowkit.errors import RegistryError
from mlflowkit.registry import journal, signed
from mlflowkit.registry.names import STAGES
from mlflowkit.registry.records import ArtifactVersion, GateResult, Promotion, utc_now

if TYPE_CHECKING:
    from mlflowkit.store.index import Index

__all__ = [
    "TABLES",
    "all_rows",
    "history",
    "index_of",
    "insert_version",
    "judge_promotion_row",
    "judge_version_row",
    "latest",
    "move_stage",
    "names",
    "published_digests",
    "sign_unsigned",
    "stage_holders",
    "version_row",
    "versions",
]

_T = TypeVar("_T")

TABLES = """
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

_READY: weakref.WeakSet[Index] = weakref.WeakSet()


def _create(conn: sqlite3.Connection) -> None:
    for stmt in TABLES.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    for table in ("registry_versions", "registry_promotions"):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        if "record" not in columns:  # an index made before records were signed
            conn.execute(f"ALTER TABLE {table} ADD COLUMN record BLOB")


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
_PROMOTION_COLUMNS = "name, version, from_stage, to_stage, at, by, reason, gates"
Query = Callable[[str, tuple[Any, ...]], list[Any]]


def _on(conn: sqlite3.Connection) -> Query:
    def q(sql: str, params: tuple[Any, ...]) -> list[Any]:
        return conn.execute(sql, params).fetchall()

    return q


def judge_version_row(store: Any, row: Any) -> tuple[signed.Judged, bool]:
    """Judge one ``registry_versions`` row (``_COLUMNS`` then ``record``); and whether its
    key columns disagree with its record (an edited or copied row: the record wins)."""
    *columns, record = row
    judged = signed.judge(
        store, "version", record, dict(zip(_COLUMNS.split(", "), columns, strict=True))
    )
    r = judged.record
    moved = r is not None and (r["name"], r.get("version")) != (row[0], int(row[1]))
    return judged, moved


def judge_promotion_row(store: Any, row: Any) -> tuple[signed.Judged, bool]:
    """Judge one ``registry_promotions`` row (``seq``, ``_PROMOTION_COLUMNS``, ``record``); and
    whether its key columns disagree with its record (the record wins)."""
    seq, *columns, record = row
    fallback = dict(zip(_PROMOTION_COLUMNS.split(", "), columns, strict=True), seq=seq)
    judged = signed.judge(store, "promotion", record, fallback)
    r = judged.record
    moved = r is not None and (r["name"], r.get("version"), r.get("seq")) != (
        row[1],
        int(row[2]),
        int(seq),
    )
    return judged, moved


@dataclass(frozen=True)
class _State:
    """What readers believe about one name: its valid records."""

    versions: dict[int, dict[str, Any]]  # number -> record, valid versions only
    promotions: list[dict[str, Any]]  # valid promotions of valid versions, in order
    holders: dict[str, int]  # stage -> version, replayed from ``promotions``
    top: int  # the highest version number of any row (numbers are never given twice)


def _state(q: Query, name: str, store: Any) -> _State:
    """Read every row of ``name`` and keep what its records prove: versions and promotions
    are taken from their signed records (the other columns are never believed), a record is
    counted once however many rows hold it, and stages are replayed from promotions."""
    versions: dict[int, dict[str, Any]] = {}
    top = 0
    for row in q(
        f"SELECT {_COLUMNS}, record FROM registry_versions WHERE name=? ORDER BY version", (name,)
    ):
        top = max(top, int(row[1]))
        judged, _ = judge_version_row(store, row)
        r = judged.record
        if judged.ok and r is not None and r["name"] == name and isinstance(r.get("version"), int):
            versions.setdefault(int(r["version"]), r)
    found: dict[int, dict[str, Any]] = {}
    for row in q(
        f"SELECT seq, {_PROMOTION_COLUMNS}, record FROM registry_promotions WHERE name=?",
        (name,),
    ):
        judged, _ = judge_promotion_row(store, row)
        r = judged.record
        if not judged.ok or r is None or r["name"] != name:
            continue
        seq = r.get("seq", row[0])  # rows of an earlier version: the row's own number
        v = versions.get(r.get("version", 0))
        if not isinstance(seq, int) or v is None or r.get("digest", v["digest"]) != v["digest"]:
            continue  # a promotion of a version readers do not believe
        found.setdefault(seq, r)
    promotions = [found[seq] for seq in sorted(found)]
    holders = {str(r["to_stage"]): int(r["version"]) for r in promotions}
    return _State(versions, promotions, holders, top)


def _version(record: dict[str, Any], stages: dict[int, str], store: Any) -> ArtifactVersion:
    metadata = record.get("metadata", "{}")
    return ArtifactVersion(
        name=record["name"],
        version=int(record["version"]),
        digest=record["digest"],
        run_id=record.get("run_id"),
        created_at=record["created_at"],
        created_by=record.get("created_by"),
        metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata),
        metrics=_ProducingMetrics(store, record.get("run_id")),
        stage=stages.get(int(record["version"])),
        _store=store,
    )


class _ProducingMetrics(cabc.Mapping[str, Any]):
    """The metrics of the run that published a version, read from its record on first use
    (``{}`` without a run, or before its record is written): listing versions, or finding the
    latest one on a cached re-run that publishes, reads no run record."""

    def __init__(self, store: Any, run_id: str | None) -> None:
        self._store = store
        self._run_id = run_id
        self._loaded: dict[str, Any] | None = None

    def _metrics(self) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = {}
            if self._store is not None and self._run_id is not None:
                from mlflowkit.errors import StoreError
                from mlflowkit.tracking import run_metrics

                try:
                    record = self._store.run(self._run_id)
                except StoreError:
                    return self._loaded
                self._loaded = dict(run_metrics(record.steps))
        return self._loaded

    def __getitem__(self, key: str) -> Any:
        return self._metrics()[key]

    def __iter__(self) -> cabc.Iterator[str]:
        return iter(self._metrics())

    def __len__(self) -> int:
        return len(self._metrics())

    def __repr__(self) -> str:
        return repr(self._metrics())


def _highest(holders: dict[str, int]) -> dict[int, str]:
    """version -> the highest stage it holds."""
    out: dict[int, str] = {}
    for stage in STAGES:  # lowest first: a higher stage overwrites
        if stage in holders:
            out[holders[stage]] = stage
    return out


def stage_holders(idx: Index, name: str, store: Any) -> dict[str, int]:
    """stage -> the version holding it now (replayed from the valid promotions)."""
    return _state(idx.query, name, store).holders


def published_digests(idx: Index) -> list[str]:
    """The digest of every version of every name (for gc to keep); reads, never creates."""
    exists = idx.query(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='registry_versions'"
    )
    if not exists:
        return []
    return [r[0] for r in idx.query("SELECT DISTINCT digest FROM registry_versions")]


def names(idx: Index, store: Any) -> list[str]:
    """Every artifact name with at least one valid version, sorted."""
    rows = idx.query("SELECT DISTINCT name FROM registry_versions ORDER BY name")
    return [r[0] for r in rows if _state(idx.query, r[0], store).versions]


def versions(idx: Index, name: str, store: Any) -> list[ArtifactVersion]:
    """Every valid version of ``name``, oldest first."""
    st = _state(idx.query, name, store)
    stages = _highest(st.holders)
    return [_version(st.versions[n], stages, store) for n in sorted(st.versions)]


def version_row(idx: Index, name: str, version: int, store: Any) -> ArtifactVersion | None:
    """One valid version, or None."""
    st = _state(idx.query, name, store)
    found = st.versions.get(version)
    return None if found is None else _version(found, _highest(st.holders), store)


def latest(idx: Index, name: str, store: Any) -> ArtifactVersion | None:
    """The newest valid version of ``name``, or None."""
    st = _state(idx.query, name, store)
    if not st.versions:
        return None
    return _version(st.versions[max(st.versions)], _highest(st.holders), store)


def insert_version(
    idx: Index,
    name: str,
    digest: str,
    *,
    run_id: str | None,
    metadata: dict[str, Any],
    store: Any = None,
) -> tuple[ArtifactVersion, bool]:
    """Add a version of ``name`` holding ``digest``, unless the latest holds it already.

    Returns the version and whether it is new. One transaction: the number is read and taken
    under the index's write lock; the record is signed (``signed.seal``) only when it is new.
    """
    meta_text = json.dumps(metadata, sort_keys=True)

    def apply(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
        st = _state(_on(conn), name, store)
        if st.versions and st.versions[max(st.versions)]["digest"] == digest:
            return st.versions[max(st.versions)], False
        number = st.top + 1
        base = {
            "name": name,
            "version": number,
            "digest": digest,
            "run_id": run_id,
            "created_at": utc_now(),
            "created_by": None,
            "metadata": meta_text,
        }
        record = signed.stamp(store, "version", base)
        data = signed.seal(store, "version", record)
        conn.execute(
            f"INSERT INTO registry_versions ({_COLUMNS}, record) VALUES (?,?,?,?,?,?,?,?)",
            (*(record[c] for c in _COLUMNS.split(", ")), data),
        )
        journal.version_file(store, name, number, data)
        return record, True

    record, made = _write(idx, apply)
    return _version(record, _highest(stage_holders(idx, name, store)), store), made


def _promotion(record: dict[str, Any]) -> Promotion:
    gates = record.get("gates", "[]")
    return Promotion(
        name=record["name"],
        version=int(record["version"]),
        from_stage=record.get("from_stage"),
        to_stage=record["to_stage"],
        at=record["at"],
        by=record.get("by"),
        reason=record.get("reason", ""),
        gates=tuple(
            GateResult(**g) for g in (json.loads(gates) if isinstance(gates, str) else gates)
        ),
    )


def history(idx: Index, name: str, store: Any) -> list[Promotion]:
    """Every valid promotion of ``name``, oldest first."""
    return [_promotion(r) for r in _state(idx.query, name, store).promotions]


def move_stage(
    idx: Index,
    name: str,
    version: int,
    to_stage: str,
    *,
    check: Callable[[dict[str, int], list[Promotion]], str | None],
    reason: str,
    gates: list[GateResult],
    store: Any = None,
) -> Promotion:
    """Point ``to_stage`` of ``name`` at ``version`` and record the promotion, in one transaction.

    ``check(holders, history)`` runs inside the transaction on the state it will change and
    returns the highest stage the version held before; it raises to refuse (nothing changes).
    The promotion's record is signed inside the transaction (it names its ``seq``).
    """

    def apply(conn: sqlite3.Connection) -> Promotion:
        st = _state(_on(conn), name, store)
        from_stage = check(st.holders, [_promotion(r) for r in st.promotions])
        target = st.versions.get(version)
        if target is None:
            raise RegistryError(f"{name}@{version} is not a valid version (any more)", name=name)
        gates_text = json.dumps([g.to_dict() for g in gates])
        at = utc_now()
        cursor = conn.execute(
            f"INSERT INTO registry_promotions ({_PROMOTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            (name, version, from_stage, to_stage, at, None, reason, gates_text),
        )
        seq = int(cursor.lastrowid or 0)
        base = {
            "seq": seq,
            "name": name,
            "version": version,
            "digest": target["digest"],
            "from_stage": from_stage,
            "to_stage": to_stage,
            "at": at,
            "by": None,
            "reason": reason,
            "gates": gates_text,
        }
        record = signed.stamp(store, "promotion", base)
        data = signed.seal(store, "promotion", record)
        conn.execute(
            "UPDATE registry_promotions SET by=?, record=? WHERE seq=?", (record["by"], data, seq)
        )
        conn.execute(
            "INSERT OR REPLACE INTO registry_stages (name, stage, version) VALUES (?,?,?)",
            (name, to_stage, version),
        )
        journal.promotion_file(store, name, seq, data)
        return _promotion(record)

    return _write(idx, apply)


def all_rows(idx: Index) -> tuple[list[Any], list[Any], list[Any]]:
    """Every version row, promotion row and stage row (for ``store.verify``); empty lists
    when the index has no registry tables (nothing is created)."""
    exists = idx.query(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='registry_versions'"
    )
    if not exists:
        return [], [], []
    return (
        idx.query(f"SELECT {_COLUMNS}, record FROM registry_versions ORDER BY name, version"),
        idx.query(
            f"SELECT seq, {_PROMOTION_COLUMNS}, record FROM registry_promotions ORDER BY seq"
        ),
        idx.query("SELECT name, stage, version FROM registry_stages ORDER BY name, stage"),
    )


def sign_unsigned(store: Any) -> int:
    """Sign every unsigned record (an earlier version's) with this process's key, in one
    transaction; the number signed. For ``store.adopt``: only for records one trusts."""
    found = journal.read_all(store, "versions")
    if not found and not published_digests(store._idx(flush=False)):
        return 0  # no registry: nothing to create
    idx = index_of(store)

    def apply(conn: sqlite3.Connection) -> int:
        count = 0
        digests: dict[tuple[str, int], str] = {}
        for row in conn.execute(f"SELECT {_COLUMNS}, record FROM registry_versions").fetchall():
            judged, _ = judge_version_row(store, row)
            r = judged.record
            if r is None:
                continue
            digests[(row[0], int(row[1]))] = str(r["digest"])
            if not signed.is_unsigned(row[-1]):
                continue
            base = {c: r.get(c) for c in _COLUMNS.split(", ")}
            record = signed.stamp(store, "version", base)
            data = signed.seal(store, "version", record)
            conn.execute(
                "UPDATE registry_versions SET created_by=?, record=? WHERE name=? AND version=?",
                (record["created_by"], data, row[0], row[1]),
            )
            journal.version_file(store, row[0], int(row[1]), data)
            count += 1
        for row in conn.execute(
            f"SELECT seq, {_PROMOTION_COLUMNS}, record FROM registry_promotions"
        ).fetchall():
            judged, _ = judge_promotion_row(store, row)
            r = judged.record
            digest = digests.get((row[1], int(row[2])))
            if r is None or digest is None or not signed.is_unsigned(row[-1]):
                continue
            base = {c: r.get(c) for c in _PROMOTION_COLUMNS.split(", ")}
            base.update(seq=int(row[0]), digest=digest)
            record = signed.stamp(store, "promotion", base)
            data = signed.seal(store, "promotion", record)
            conn.execute(
                "UPDATE registry_promotions SET by=?, record=? WHERE seq=?",
                (record["by"], data, row[0]),
            )
            journal.promotion_file(store, row[1], int(row[0]), data)
            count += 1
        return count

    return _write(idx, apply)
