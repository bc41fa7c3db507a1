"""What ``store.verify`` reports about the registry: records that readers ignore.

Invariants
----------
* Every journal file and every index row whose record does not count (``signed.judge``) is
  listed once per place it was found, with why; so is a valid promotion of a version that
  does not count, and a ``registry_stages`` row that the valid promotions do not explain (an
  edited index: readers use the replayed stage).
* Nothing is changed or deleted: records are small, and an admin may still adopt them.
* A store without registry files or tables costs one listing and one schema query.
"""

from __future__ import annotations

from typing import Any

from mlflowkit.registry import db, journal, signed
from mlflowkit.store.seams import HasSeams

__all__ = ["findings"]


def findings(store: Any) -> list[str]:
    """One line per registry record readers ignore (see the module docstring)."""
    out: list[str] = []
    files = journal.read_all(store, "versions"), journal.read_all(store, "promotions")
    for kind, found in zip(("version", "promotion"), files, strict=True):
        for number, name, path, data in found:
            judged = signed.judge(store, kind, data)
            r = judged.record
            why = judged.problem
            if why is None and r is not None:
                key = "version" if kind == "version" else "seq"
                if r.get("name") != name or r.get(key, number) != number:
                    why = f"it holds the record of {r.get('name')}, {key} {r.get(key)} (moved?)"
            if why is not None:
                out.append(f"untrusted registry file {path}: {why}")
    # a lost index is filled back first, as readers would
    if not isinstance(store, HasSeams):
        return out
    idx = db.index_of(store) if files[0] or files[1] else store.seams.index()
    version_rows, promotion_rows, stage_rows = db.all_rows(idx)
    for row in version_rows:
        judged, moved = db.judge_version_row(store, row)
        why = judged.problem
        if why is None and moved:
            why = "its columns do not match its record (edited or copied; readers use the record)"
        if why is not None:
            out.append(f"untrusted artifact version {row.name}@{row.version} (index row): {why}")
    for prow in promotion_rows:
        judged, moved = db.judge_promotion_row(store, prow)
        why = judged.problem
        if why is None and moved:
            why = "its columns do not match its record (edited or copied; readers use the record)"
        if why is None and db.version_row(idx, prow.name, int(prow.version), store) is None:
            why = f"version {prow.name}@{prow.version} does not count"
        if why is not None:
            out.append(
                f"untrusted promotion {prow.seq} of {prow.name}@{prow.version} to "
                f"{prow.to_stage!r} (index row): {why}"
            )
    names = sorted({r.name for r in version_rows} | {r.name for r in stage_rows})
    for name in names:
        holders = db.stage_holders(idx, name, store)
        for srow in stage_rows:
            stage, version = srow.stage, srow.version
            if srow.name == name and holders.get(stage) != int(version):
                believed = holders.get(stage)
                out.append(
                    f"registry stage {name}@{stage} points at version {version} in the index, "
                    "but no valid promotion put it there (edited?); readers use "
                    + ("no version" if believed is None else f"version {believed}")
                )
    return out
