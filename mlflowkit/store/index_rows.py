"""What every SQL index does the same way: rows to records and back, run-file syncing, lineage.

Layer 5, shared by :mod:`mlflowkit.store.sqlite_index` and :mod:`mlflowkit.store.postgres_index`:
each implementation keeps only its SQL (placeholders, upserts, transactions, locks) and calls
these functions for the logic, so the two cannot drift apart.

Invariants:

* A run file that does not parse as a run record is skipped (``parse_run`` is None), never
  indexed half.
* Registry columns come back in the order of ``VERSION_COLUMNS`` / ``PROMOTION_COLUMNS`` and
  are turned into rows by keyword, whatever the backend's row type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mlflowkit.records import CacheEntry, RunRecord
from mlflowkit.store.index import ObjectRow, PackedRow, PromotionRow, RunFile, StageRow, VersionRow

__all__ = [
    "PROMOTION_COLUMNS",
    "SEGMENTS_QUERY",
    "VERSION_COLUMNS",
    "cache_values",
    "object_values",
    "packed_values",
    "parse_run",
    "promotion_row",
    "promotion_values",
    "run_values",
    "runs_to_sync",
    "stage_row",
    "step_values",
    "upstream_runs",
    "version_row",
    "version_values",
]

VERSION_COLUMNS = "name, version, digest, run_id, created_at, created_by, metadata, record"
PROMOTION_COLUMNS = "seq, name, version, from_stage, to_stage, at, by, reason, gates, record"

#: the distinct segments of ``packed``, one seek down the index on ``packed(segment)`` each (a
#: loose index scan: each next name is the least one above the last; both databases answer
#: ``MIN`` over an indexed column from the index), not a read of every row
SEGMENTS_QUERY = """
WITH RECURSIVE seen(segment) AS (
    SELECT MIN(segment) FROM packed
    UNION ALL
    SELECT (SELECT MIN(segment) FROM packed WHERE segment > seen.segment)
    FROM seen WHERE seen.segment IS NOT NULL
)
SELECT segment FROM seen WHERE segment IS NOT NULL
"""


def parse_run(text: str) -> RunRecord | None:
    """The run record in a run file's text, or None when it is not one."""
    try:
        data = json.loads(text)
        return RunRecord.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


def runs_to_sync(
    known: dict[str, tuple[Any, Any]], listed: Iterable[RunFile], read: Callable[[str], str | None]
) -> tuple[list[tuple[RunFile, str]], list[str]]:
    """``(new or changed run files with their text, ids whose file is gone)``.

    ``known`` maps an indexed run id to its ``(size, stamp)``; a listed file whose size or
    stamp differs is read with ``read(run_id)`` (None: gone or unreadable, skipped).
    """
    listed = list(listed)
    seen = {f.run_id for f in listed}
    changed: list[tuple[RunFile, str]] = []
    for f in listed:
        if known.get(f.run_id) != (f.size, f.stamp):
            text = read(f.run_id)
            if text is not None and parse_run(text) is not None:
                changed.append((f, text))
    gone = [run_id for run_id in known if run_id not in seen]
    return changed, gone


def upstream_runs(
    digest: str, producers: Callable[[list[str]], Iterable[tuple[str, str | None]]]
) -> set[str]:
    """Ids of the runs holding a step run upstream of ``digest`` (transitively).

    ``producers(digests)`` returns ``(run_id, inputs JSON)`` of the step runs whose output is
    one of ``digests`` (called with at most 500 at a time).
    """
    runs: set[str] = set()
    seen = {digest}
    frontier = [digest]
    while frontier:
        batch, frontier = frontier[:500], frontier[500:]
        for run_id, inputs in producers(batch):
            runs.add(run_id)
            for d in json.loads(inputs or "{}").values():
                if isinstance(d, str) and d not in seen:
                    seen.add(d)
                    frontier.append(d)
    return runs


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def version_row(r: Sequence[Any]) -> VersionRow:
    """A ``VersionRow`` from columns in ``VERSION_COLUMNS`` order."""
    return VersionRow(
        name=r[0],
        version=int(r[1]),
        digest=r[2],
        run_id=r[3],
        created_at=r[4],
        created_by=r[5],
        metadata=r[6],
        record=_blob(r[7]),
    )


def promotion_row(r: Sequence[Any]) -> PromotionRow:
    """A ``PromotionRow`` from columns in ``PROMOTION_COLUMNS`` order."""
    return PromotionRow(
        seq=int(r[0]),
        name=r[1],
        version=int(r[2]),
        from_stage=r[3],
        to_stage=r[4],
        at=r[5],
        by=r[6],
        reason=r[7],
        gates=r[8],
        record=_blob(r[9]),
    )


def stage_row(r: Sequence[Any]) -> StageRow:
    """A ``StageRow`` from ``(name, stage, version)``."""
    return StageRow(r[0], r[1], int(r[2]))


def version_values(row: VersionRow) -> tuple[Any, ...]:
    """A version row's values in ``VERSION_COLUMNS`` order."""
    return (
        row.name,
        row.version,
        row.digest,
        row.run_id,
        row.created_at,
        row.created_by,
        row.metadata,
        row.record,
    )


def promotion_values(row: PromotionRow, seq: int | None) -> tuple[Any, ...]:
    """A promotion row's values in ``PROMOTION_COLUMNS`` order, numbered ``seq``."""
    return (
        seq,
        row.name,
        row.version,
        row.from_stage,
        row.to_stage,
        row.at,
        row.by,
        row.reason,
        row.gates,
        row.record,
    )


def object_values(rows: Iterable[ObjectRow]) -> list[tuple[Any, ...]]:
    """``(digest, size, serializer, created_at)`` per object row."""
    return [(r.digest, r.size, r.serializer, r.created_at) for r in rows]


def packed_values(rows: Iterable[PackedRow]) -> list[tuple[Any, ...]]:
    """The column values of segment records' places."""
    return [(r.name, r.segment, r.offset, r.length, r.checksum) for r in rows]


def cache_values(entry: CacheEntry, file_size: int, stored: Any) -> tuple[Any, ...]:
    """A cache row: key, output, step, stored (as the backend keeps a flag), sizes, run."""
    return (
        entry.key,
        entry.output_digest,
        entry.step,
        stored,
        entry.size,
        entry.created_at,
        entry.run_id,
        file_size,
    )


def run_values(run_file: RunFile, record: RunRecord, text: str) -> tuple[Any, ...]:
    """A run row: id, pipeline, status, times, the file's size and stamp, its text."""
    return (
        run_file.run_id,
        record.pipeline,
        record.status,
        record.started_at,
        record.finished_at,
        run_file.size,
        run_file.stamp,
        text,
    )


def step_values(run_id: str, record: RunRecord) -> list[tuple[Any, ...]]:
    """One step-run row per step of ``record`` (for lineage)."""
    return [
        (
            run_id,
            i,
            s.name,
            s.step,
            s.key,
            s.status,
            s.output_digest,
            json.dumps(s.inputs, sort_keys=True),
        )
        for i, s in enumerate(record.steps)
    ]
