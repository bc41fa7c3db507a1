"""Walks of a whole store's files: verifying them, measuring them, scanning them into index rows.

Layer 5 (part of the store's implementation). Both read the files themselves (the truth),
never the index, so they are right even after a writer was killed before its index rows
were written.

Invariants:

* ``verify_objects`` deserializes nothing that can run code before its signature verified;
  a corrupt or untrusted object is quarantined (its cache entries dropped), never deleted.
* ``record_findings`` judges every cache entry, pack and finished run record by its signature
  (the guard's ``document_problem``) and changes nothing.
* ``scan_files`` reads only: it is what an index is rebuilt from.
* ``disk_usage`` counts only the store's own files (no temp files in ``objects/`` or
  ``cache/``), and creates nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.errors import SerializationError, UntrustedObjectError
from mlflowkit.store import serializers
from mlflowkit.store.formats import (
    CorruptFile,
    decode_entry,
    decode_entry_signed,
    decode_pack_signed,
    unsign_run,
)
from mlflowkit.store.index import ObjectRow
from mlflowkit.store.layout import STARTED, is_temp

if TYPE_CHECKING:
    from mlflowkit.store.core import StoreCore
    from mlflowkit.store.indexer import Scan

__all__ = ["disk_usage", "record_findings", "scan_files", "verify_objects"]


def verify_objects(store: StoreCore) -> tuple[list[str], list[str]]:
    """``(corrupt digests, sorted; "untrusted object <digest>: <why>" lines)``.

    An object is corrupt when its header or payload fails its checksum, when its header names
    another address, or when its value does not hash to its name (when its serializer and
    hasher are registered here).
    """
    corrupt = []
    untrusted = []
    for _, digest in store._object_files("objects"):
        try:
            try:
                got = store._load_payload(digest)
            except UntrustedObjectError as exc:
                reason = str(exc).split(": ", 1)[-1].split(". Its serializer", 1)[0]
                untrusted.append(f"untrusted object {digest}: {reason}")
                store._quarantine(digest)  # never loaded; its producer runs again
                continue
            if got is None:
                continue
            try:
                value = serializers.loads(got[0], got[1])
            except SerializationError:
                continue
            store._check_value(digest, value)
        except CorruptFile:
            store._quarantine(digest)
            corrupt.append(digest)
    return sorted(corrupt), untrusted


def record_findings(store: StoreCore) -> list[str]:
    """One line per cache entry, pack or run record whose signature does not count."""
    guard, files, root = store.seams.guard, store.seams.objects, store.root
    out = []
    for f, key in store._object_files("cache", ".json"):
        data = files.read(f"{root}/cache/{f.name}")
        if data is None:
            continue
        entry, block, digest = decode_entry_signed(data)
        if entry is None:
            continue  # damaged: removed when read, like before
        why = guard.document_problem("cache", digest, block)
        if why is not None:
            out.append(f"untrusted cache entry {key}: {why}")
    for f in store._own_files("packs"):
        if not f.name.endswith(".json"):
            continue
        data = files.read(f"{root}/packs/{f.name}") or b""
        entries, block, digest = decode_pack_signed(data)
        if entries is None:
            continue
        why = guard.document_problem("pack", digest, block)
        if why is not None:
            out.append(f"untrusted cache pack {f.name[:-5]}: {why}")
    owned = guard.owner() is not None
    for rf in store._run_files():
        if not rf.stamp.startswith(".json:"):
            continue  # a run in progress: its record is signed when it ends
        data = files.read(store._run_path(rf.run_id))
        if data is None:
            continue
        body, block, digest = unsign_run(data)
        if block is None and (not owned or b'"executed"' not in body):
            continue  # an earlier version's store, or a fully cached run (never signed)
        why = guard.document_problem("run", digest, block)
        if why is not None:
            out.append(f"untrusted run record {rf.run_id}: {why}")
    return out


def disk_usage(store: StoreCore) -> dict[str, Any]:
    """Counts and bytes per area: objects, cache, runs, packs, quarantine, tmp, total."""
    files, root = store.seams.objects, store.root
    usage: dict[str, Any] = {}
    for area in ("objects", "cache"):
        found = [f for f in files.walk(f"{root}/{area}") if not is_temp(f.name)]
        usage[area] = {"count": len(found), "bytes": sum(f.size for f in found)}
    runs = [f for f in files.listdir(f"{root}/runs") if f.name.endswith((".json", STARTED))]
    usage["runs"] = {"count": len(runs), "bytes": sum(f.size for f in runs)}
    for area in ("packs", "quarantine", "tmp"):
        found = files.listdir(f"{root}/{area}")
        usage[area] = {"count": len(found), "bytes": sum(f.size for f in found)}
    usage["total"] = {
        "count": sum(v["count"] for v in usage.values()),
        "bytes": sum(v["bytes"] for v in usage.values()),
    }
    return usage


def scan_files(store: StoreCore) -> Scan:
    """Read the files into index rows: object headers, cache entries and run records."""
    files, root = store.seams.objects, store.root
    objects = []
    for f in files.walk(f"{root}/objects"):
        digest = f.name.rsplit("/", 1)[-1]
        got = store._read_header(f"{root}/objects/{f.name}")
        if got is not None:
            objects.append(ObjectRow(digest, f.size, got[0], f.mtime))
    caches = []
    for f in files.walk(f"{root}/cache"):
        data = files.read(f"{root}/cache/{f.name}")
        entry = decode_entry(data) if data is not None else None
        if entry is not None:
            caches.append((entry, f.size))
    runs = []
    for rf in store._run_files():
        data = store._read_run(rf.run_id)
        if data is not None:
            runs.append((rf, data.decode("utf-8", "replace")))
    return objects, caches, runs
