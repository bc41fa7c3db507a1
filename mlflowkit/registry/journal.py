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

from typing import TYPE_CHECKING, Any

from mlflowkit.store.index import PromotionRow, VersionRow
from mlflowkit.store.seams import HasSeams

if TYPE_CHECKING:
    from mlflowkit.store.index import RegistryTransaction

__all__ = ["promotion_file", "read_all", "restore", "version_file"]

_VERSIONS = "registry/versions"
_PROMOTIONS = "registry/promotions"


def _folder(name: str) -> str:
    return name.replace("/", "~")


def _name(folder: str) -> str:
    return folder.replace("~", "/")


def _write(store: Any, path: str, data: bytes) -> None:
    if not isinstance(store, HasSeams):
        return  # a store without files of its own keeps no journal
    seams = store.seams
    objects = seams.objects
    objects.write_atomic(f"{objects.root}/{path}", (data,), seams.durable and objects.local)


def version_file(store: Any, name: str, version: int, data: bytes) -> None:
    """Write the file of one version (``data``: its sealed, signed record)."""
    _write(store, f"{_VERSIONS}/{_folder(name)}/{version}.json", data)


def promotion_file(store: Any, name: str, seq: int, data: bytes) -> None:
    """Write the file of one promotion (``data``: its sealed, signed record)."""
    _write(store, f"{_PROMOTIONS}/{_folder(name)}/{seq}.json", data)


def read_all(store: Any, area: str) -> list[tuple[int, str, str, bytes]]:
    """``(number, name, path under the store, bytes)`` of each file of ``area``
    (``"versions"`` or ``"promotions"``)."""
    if not isinstance(store, HasSeams):
        return []
    io = store.seams.objects
    root = io.root
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


def restore(store: Any, tx: RegistryTransaction) -> int:
    """Inside a registry transaction on an index without versions: load the journal back.

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
    for r, sealed in versions:
        tx.insert_version(
            VersionRow(
                name=r["name"],
                version=int(r["version"]),
                digest=r["digest"],
                run_id=r.get("run_id"),
                created_at=r["created_at"],
                created_by=r.get("created_by"),
                metadata=r.get("metadata", "{}"),
                record=sealed,
            )
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
    for seq, r, sealed in sorted(promotions, key=lambda item: item[0]):
        tx.insert_promotion(
            PromotionRow(
                seq=seq,
                name=r["name"],
                version=int(r["version"]),
                from_stage=r.get("from_stage"),
                to_stage=r["to_stage"],
                at=r["at"],
                by=r.get("by"),
                reason=r.get("reason", ""),
                gates=r.get("gates", "[]"),
                record=sealed,
            )
        )
        tx.set_stage(r["name"], r["to_stage"], int(r["version"]))
    return len(versions)
