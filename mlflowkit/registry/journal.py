"""The registry's records as files in the store, so that a lost index can be rebuilt.

The index (``db``) is where versions are numbered and stages moved, in transactions. This
module also writes each record as a small JSON file under the store URL, like the run records::

    registry/versions/<name>/<version>.json      one version (``/`` in a name written as ``~``)
    registry/promotions/<name>/<seq>.json        one promotion; ``seq`` orders them

Each file holds the record sealed and signed (``signed``): the same bytes as the index row's
``record`` column. Files written by an earlier version hold plain JSON (unsigned).

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

import sqlite3
from typing import Any

__all__ = ["promotion_file", "read_all", "restore", "version_file"]

_VERSIONS = "registry/versions"
_PROMOTIONS = "registry/promotions"


def _folder(name: str) -> str:
    return name.replace("/", "~")


def _name(folder: str) -> str:
    return folder.replace("~", "/")


def _io(store: Any) -> tuple[Any, str] | None:
    io, root = getattr(store, "_io", None), getattr(store, "root", None)
    return None if io is None or root is None else (io, root)


def _write(store: Any, path: str, data: bytes) -> None:
    found = _io(store)
    if found is None:
        return
    io, root = found
    durable = bool(getattr(store, "durable", False)) and bool(getattr(io, "local", False))
    io.write_atomic(f"{root}/{path}", (data,), durable)


def version_file(store: Any, name: str, version: int, data: bytes) -> None:
    """Write the file of one version (``data``: its sealed, signed record)."""
    _write(store, f"{_VERSIONS}/{_folder(name)}/{version}.json", data)


def promotion_file(store: Any, name: str, seq: int, data: bytes) -> None:
    """Write the file of one promotion (``data``: its sealed, signed record)."""
    _write(store, f"{_PROMOTIONS}/{_folder(name)}/{seq}.json", data)


def read_all(store: Any, area: str) -> list[tuple[int, str, str, bytes]]:
    """``(number, name, path under the store, bytes)`` of each file of ``area``
    (``"versions"`` or ``"promotions"``)."""
    found = _io(store)
    if found is None:
        return []
    io, root = found
    out: list[tuple[int, str, str, bytes]] = []
    for f in io.walk(f"{root}/registry/{area}"):
        folder, _, base = f.name.rpartition("/")
        number = base.removesuffix(".json")
        if not base.endswith(".json") or not number.isdigit():
            continue
        path = f"registry/{area}/{f.name}"
        data = io.read(f"{root}/{path}")
        if data is not None:
            out.append((int(number), _name(folder.rsplit("/", 1)[-1]), path, data))
    return out


def _sealed(data: bytes) -> bytes | None:
    """``data`` when it is a sealed record; None for an earlier version's plain JSON."""
    return data if data.startswith((b'{"signed":"', b'{"checksum":"')) else None


def restore(store: Any, conn: sqlite3.Connection) -> int:
    """Inside a write transaction on an index without versions: load the journal back.

    Only records that count (``signed.judge``) are loaded: a file forged by someone without
    the role never enters the index (``store.verify`` lists it). Returns how many versions
    were restored.
    """
    from mlflowkit.registry.signed import judge

    versions = []
    for number, name, _, data in read_all(store, "versions"):
        judged = judge(store, "version", data)
        r = judged.record
        if not judged.ok or r is None or r.get("name") != name or r.get("version") != number:
            continue
        versions.append((r, _sealed(data)))
    if not versions:
        return 0
    conn.executemany(
        "INSERT OR IGNORE INTO registry_versions (name, version, digest, run_id, created_at, "
        "created_by, metadata, record) VALUES (?,?,?,?,?,?,?,?)",
        [
            (
                r["name"],
                int(r["version"]),
                r["digest"],
                r.get("run_id"),
                r["created_at"],
                r.get("created_by"),
                r.get("metadata", "{}"),
                signed,
            )
            for r, signed in versions
        ],
    )
    promotions = []
    for seq, name, _, data in read_all(store, "promotions"):
        judged = judge(store, "promotion", data)
        r = judged.record
        if not judged.ok or r is None or r.get("name") != name:
            continue
        if r.get("seq", seq) != seq:
            continue
        promotions.append((seq, r, _sealed(data)))
    for seq, r, signed in sorted(promotions, key=lambda item: item[0]):
        conn.execute(
            "INSERT OR IGNORE INTO registry_promotions (seq, name, version, from_stage, "
            "to_stage, at, by, reason, gates, record) VALUES (?,?,?,?,?,?,?,?,?,?)",
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
                signed,
            ),
        )
        conn.execute(
            "INSERT OR REPLACE INTO registry_stages (name, stage, version) VALUES (?,?,?)",
            (r["name"], r["to_stage"], int(r["version"])),
        )
    return len(versions)
