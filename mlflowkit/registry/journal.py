"""The registry's records as files in the store, so that a lost index can be rebuilt.

The index (``db``) is where versions are numbered and stages moved, in transactions. This
module also writes each record as a small JSON file under the store URL, like the run records::

    registry/versions/<name>/<version>.json      one version (``/`` in a name written as ``~``)
    registry/promotions/<name>/<seq>.json        one promotion; ``seq`` orders them

Invariants
----------
* A file is written (atomically) inside the transaction that makes its record, before COMMIT:
  every committed record has its file. A file whose transaction did not commit (a crash between
  the two) names a number the next writer takes, and that writer's file replaces it.
* When the index holds no version at all (a new, deleted or unreadable ``index.sqlite``) and the
  store has journal files, ``restore`` loads them back in one transaction and replays the
  promotions in order to set the stages. Only a record whose commit was cut short by a crash can
  come back that was never committed.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["promotion_file", "restore", "version_file"]

_VERSIONS = "registry/versions"
_PROMOTIONS = "registry/promotions"


def _folder(name: str) -> str:
    return name.replace("/", "~")


def _name(folder: str) -> str:
    return folder.replace("~", "/")


def _io(store: Any) -> tuple[Any, str] | None:
    io, root = getattr(store, "_io", None), getattr(store, "root", None)
    return None if io is None or root is None else (io, root)


def _write(store: Any, path: str, data: dict[str, Any]) -> None:
    found = _io(store)
    if found is None:
        return
    io, root = found
    durable = bool(getattr(store, "durable", False)) and bool(getattr(io, "local", False))
    io.write_atomic(f"{root}/{path}", (json.dumps(data, sort_keys=True).encode(),), durable)


def version_file(store: Any, row: dict[str, Any]) -> None:
    """Write the file of one version (``row``: the columns of ``registry_versions``)."""
    _write(store, f"{_VERSIONS}/{_folder(row['name'])}/{row['version']}.json", row)


def promotion_file(store: Any, seq: int, row: dict[str, Any]) -> None:
    """Write the file of one promotion (``row``: the columns of ``registry_promotions``)."""
    _write(store, f"{_PROMOTIONS}/{_folder(row['name'])}/{seq}.json", row)


def _read_all(store: Any, area: str) -> list[tuple[int, dict[str, Any]]]:
    found = _io(store)
    if found is None:
        return []
    io, root = found
    out: list[tuple[int, dict[str, Any]]] = []
    for f in io.walk(f"{root}/{area}"):
        folder, _, base = f.name.rpartition("/")
        number = base.removesuffix(".json")
        if not base.endswith(".json") or not number.isdigit():
            continue
        data = io.read(f"{root}/{area}/{f.name}")
        try:
            row = json.loads(data or b"")
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("name") == _name(folder.rsplit("/", 1)[-1]):
            out.append((int(number), row))
    return out


def restore(store: Any, conn: sqlite3.Connection) -> int:
    """Inside a write transaction on an index without versions: load the journal back.

    Returns how many versions were restored.
    """
    versions = _read_all(store, _VERSIONS)
    if not versions:
        return 0
    conn.executemany(
        "INSERT OR IGNORE INTO registry_versions (name, version, digest, run_id, created_at, "
        "created_by, metadata) VALUES (?,?,?,?,?,?,?)",
        [
            (
                r["name"],
                int(r["version"]),
                r["digest"],
                r.get("run_id"),
                r["created_at"],
                r.get("created_by"),
                r.get("metadata", "{}"),
            )
            for _, r in versions
        ],
    )
    promotions = sorted(_read_all(store, _PROMOTIONS), key=lambda item: item[0])
    for seq, r in promotions:
        conn.execute(
            "INSERT OR IGNORE INTO registry_promotions (seq, name, version, from_stage, "
            "to_stage, at, by, reason, gates) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                seq,
                r["name"],
                int(r["version"]),
                r.get("from_stage"),
                r["to_stage"],
                r["at"],
                r.get("by"),
                r.get("reason", ""),
                r.get("gates", "[]"),
            ),
        )
        conn.execute(
            "INSERT OR REPLACE INTO registry_stages (name, stage, version) VALUES (?,?,?)",
            (r["name"], r["to_stage"], int(r["version"])),
        )
    return len(versions)
