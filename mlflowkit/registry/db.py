"""The registry's rows in the store's index, and every read and transaction on them.

The rows (``VersionRow``, ``PromotionRow``, ``StageRow``) live behind the index contract
(:mod:`mlflowkit.store.index`: SQLite by default); this module speaks only that contract, never
SQL. ``record`` is the signed record (``signed``) a row was made from; readers build versions
and promotions from it, never from the other columns, and derive the stages from the valid
promotions (the stage rows are written but never believed).

Invariants
----------
* Every change is one exclusive registry transaction (``Index.registry``): concurrent writers
  (threads, processes) wait for each other, a version number is read and taken in the same
  transaction, and the index refuses a number given twice. A process killed mid-change leaves
  the old state or the new one, never a half-made one.
* A row whose record does not count (``signed.judge``: forged, edited, unsigned in an owned
  store, or made by a key without the role) is ignored by every reader, as is a promotion of
  a version that does not count.
* Unlike the index's other tables these rows are not a cache of the store's files: the index
  never drops them when it rebuilds (see ``mlflowkit.store.index``).
* Only this module reads and writes the registry's rows; the rest of the registry speaks in
  records.
* Each new version and promotion is also written as a file of the store (``journal``) inside
  its transaction, and a new or lost index is filled back from those files on first use.
"""

from __future__ import annotations

import json
import weakref
from collections import abc as cabc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflowkit.errors import RegistryError
from mlflowkit.registry import journal, signed
from mlflowkit.registry.names import STAGES
from mlflowkit.registry.records import ArtifactVersion, GateResult, Promotion, utc_now
from mlflowkit.store.index import (
    Index,
    PromotionRow,
    RegistryReader,
    RegistryTransaction,
    StageRow,
    VersionRow,
)
from mlflowkit.store.seams import HasSeams

__all__ = [
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

_READY: weakref.WeakSet[Index] = weakref.WeakSet()


def index_of(store: Any) -> Index:
    """The store's index, filled back from the journal when it holds no version yet.

    Raises
    ------
    RegistryError
        The store exposes no seams (another implementation of the store contract).
    """
    if not isinstance(store, HasSeams):
        raise RegistryError(
            f"store {store!r} keeps no index, so it cannot hold named artifacts: use an "
            "mk.Store (a folder or an fsspec URL)"
        )
    # an index replaced since it was opened is opened again (and then filled back)
    idx = store.seams.index()
    if idx not in _READY:

        def prepare(tx: RegistryTransaction) -> None:
            if not tx.version_rows():
                journal.restore(store, tx)  # a new or lost index: load the store's files

        idx.registry(prepare)
        _READY.add(idx)
    return idx


_COLUMNS = ("name", "version", "digest", "run_id", "created_at", "created_by", "metadata")
_PROMOTION_COLUMNS = (
    "name",
    "version",
    "from_stage",
    "to_stage",
    "at",
    "by",
    "reason",
    "gates",
)


def _columns(row: VersionRow | PromotionRow, names: tuple[str, ...]) -> dict[str, Any]:
    return {c: getattr(row, c) for c in names}


def judge_version_row(store: Any, row: VersionRow) -> tuple[signed.Judged, bool]:
    """Judge one version row; and whether its key columns disagree with its record (an
    edited or copied row: the record wins)."""
    judged = signed.judge(store, "version", row.record, _columns(row, _COLUMNS))
    r = judged.record
    moved = r is not None and (r["name"], r.get("version")) != (row.name, int(row.version))
    return judged, moved


def judge_promotion_row(store: Any, row: PromotionRow) -> tuple[signed.Judged, bool]:
    """Judge one promotion row; and whether its key columns disagree with its record (the
    record wins)."""
    fallback = dict(_columns(row, _PROMOTION_COLUMNS), seq=row.seq)
    judged = signed.judge(store, "promotion", row.record, fallback)
    r = judged.record
    moved = r is not None and (r["name"], r.get("version"), r.get("seq")) != (
        row.name,
        int(row.version),
        row.seq,
    )
    return judged, moved


@dataclass(frozen=True)
class _State:
    """What readers believe about one name: its valid records."""

    versions: dict[int, dict[str, Any]]  # number -> record, valid versions only
    promotions: list[dict[str, Any]]  # valid promotions of valid versions, in order
    holders: dict[str, int]  # stage -> version, replayed from ``promotions``
    top: int  # the highest version number of any row (numbers are never given twice)


def _state(rows: RegistryReader, name: str, store: Any) -> _State:
    """Read every row of ``name`` and keep what its records prove: versions and promotions
    are taken from their signed records (the other columns are never believed), a record is
    counted once however many rows hold it, and stages are replayed from promotions."""
    versions: dict[int, dict[str, Any]] = {}
    top = 0
    for row in rows.version_rows(name):
        top = max(top, int(row.version))
        judged, _ = judge_version_row(store, row)
        r = judged.record
        if judged.ok and r is not None and r["name"] == name and isinstance(r.get("version"), int):
            versions.setdefault(int(r["version"]), r)
    found: dict[int, dict[str, Any]] = {}
    for prow in rows.promotion_rows(name):
        judged, _ = judge_promotion_row(store, prow)
        r = judged.record
        if not judged.ok or r is None or r["name"] != name:
            continue
        seq = r.get("seq", prow.seq)  # rows of an earlier version: the row's own number
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
    return _state(idx, name, store).holders


def published_digests(idx: Index) -> list[str]:
    """The digest of every version of every name (for gc to keep); reads, never creates."""
    return idx.published_digests()


def names(idx: Index, store: Any) -> list[str]:
    """Every artifact name with at least one valid version, sorted."""
    found = sorted({row.name for row in idx.version_rows()})
    return [name for name in found if _state(idx, name, store).versions]


def versions(idx: Index, name: str, store: Any) -> list[ArtifactVersion]:
    """Every valid version of ``name``, oldest first."""
    st = _state(idx, name, store)
    stages = _highest(st.holders)
    return [_version(st.versions[n], stages, store) for n in sorted(st.versions)]


def version_row(idx: Index, name: str, version: int, store: Any) -> ArtifactVersion | None:
    """One valid version, or None."""
    st = _state(idx, name, store)
    found = st.versions.get(version)
    return None if found is None else _version(found, _highest(st.holders), store)


def latest(idx: Index, name: str, store: Any) -> ArtifactVersion | None:
    """The newest valid version of ``name``, or None."""
    st = _state(idx, name, store)
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
    in it; the record is signed (``signed.seal``) only when it is new.
    """
    meta_text = json.dumps(metadata, sort_keys=True)

    def apply(tx: RegistryTransaction) -> tuple[dict[str, Any], bool]:
        st = _state(tx, name, store)
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
        row = VersionRow(**{c: record[c] for c in _COLUMNS}, record=data)
        if not tx.insert_version(row):
            raise RegistryError(
                f"{name}@{number} was taken inside the transaction that numbered it: the "
                "index did not keep the registry's transaction exclusive; check its backend",
                name=name,
            )
        journal.version_file(store, name, number, data)
        return record, True

    record, made = idx.registry(apply)
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
    return [_promotion(r) for r in _state(idx, name, store).promotions]


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

    def apply(tx: RegistryTransaction) -> Promotion:
        st = _state(tx, name, store)
        from_stage = check(st.holders, [_promotion(r) for r in st.promotions])
        target = st.versions.get(version)
        if target is None:
            raise RegistryError(f"{name}@{version} is not a valid version (any more)", name=name)
        gates_text = json.dumps([g.to_dict() for g in gates])
        at = utc_now()
        row = PromotionRow(
            None, name, version, from_stage, to_stage, at, None, reason, gates_text, None
        )
        seq = tx.insert_promotion(row)
        assert seq is not None  # a promotion without a number always gets one
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
        tx.update_promotion(seq, record["by"], data)
        tx.set_stage(name, to_stage, version)
        journal.promotion_file(store, name, seq, data)
        return _promotion(record)

    return idx.registry(apply)


def all_rows(idx: Index) -> tuple[list[VersionRow], list[PromotionRow], list[StageRow]]:
    """Every version row, promotion row and stage row (for ``store.verify``); empty lists
    when the index has no registry (nothing is created)."""
    return idx.version_rows(), idx.promotion_rows(), idx.stage_rows()


def sign_unsigned(store: Any) -> int:
    """Sign every unsigned record (an earlier version's) with this process's key, in one
    transaction; the number signed. For ``store.adopt``: only for records one trusts."""
    found = journal.read_all(store, "versions")
    if not found and not published_digests(store.seams.index()):
        return 0  # no registry: nothing to create
    idx = index_of(store)

    def apply(tx: RegistryTransaction) -> int:
        count = 0
        digests: dict[tuple[str, int], str] = {}
        for row in tx.version_rows():
            judged, _ = judge_version_row(store, row)
            r = judged.record
            if r is None:
                continue
            digests[(row.name, int(row.version))] = str(r["digest"])
            if not signed.is_unsigned(row.record):
                continue
            base = {c: r.get(c) for c in _COLUMNS}
            record = signed.stamp(store, "version", base)
            data = signed.seal(store, "version", record)
            tx.update_version(row.name, row.version, record["created_by"], data)
            journal.version_file(store, row.name, int(row.version), data)
            count += 1
        for prow in tx.promotion_rows():
            judged, _ = judge_promotion_row(store, prow)
            r = judged.record
            digest = digests.get((prow.name, int(prow.version)))
            if r is None or digest is None or prow.seq is None:
                continue
            if not signed.is_unsigned(prow.record):
                continue
            base = {c: r.get(c) for c in _PROMOTION_COLUMNS}
            base.update(seq=int(prow.seq), digest=digest)
            record = signed.stamp(store, "promotion", base)
            data = signed.seal(store, "promotion", record)
            tx.update_promotion(prow.seq, record["by"], data)
            journal.promotion_file(store, prow.name, int(prow.seq), data)
            count += 1
        return count

    return idx.registry(apply)
