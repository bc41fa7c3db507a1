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
    HEAD_MAX,
    SEGMENT_OBJECT,
    CorruptFile,
    decode_entry,
    decode_entry_signed,
    decode_pack_signed,
    decode_segment,
    parse_header,
    payload_blake3,
    unsign_run,
)
from mlflowkit.store.index import ObjectRow, PackedRow
from mlflowkit.store.layout import NAME, STARTED, is_temp
from mlflowkit.store.segments import records_in, segment_path

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry
    from mlflowkit.store.core import StoreCore
    from mlflowkit.store.indexer import Scan
    from mlflowkit.store.objects import FileStat

__all__ = [
    "disk_usage",
    "read_segment",
    "record_findings",
    "rows_of_segment",
    "scan_files",
    "segment_files",
    "verify_objects",
    "verify_segments",
]


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
    """Counts and bytes per area: objects, cache, segments, runs, packs, quarantine, tmp,
    total.

    ``objects`` and ``cache`` count every object and cache entry, whether in a file of its own
    or a record of a segment file; ``segments`` counts the segment files and the bytes they
    hold beyond their records (their tables of contents), so the byte counts add up to what
    the files take.
    """
    files, root = store.seams.objects, store.root
    usage: dict[str, Any] = {}
    for area in ("objects", "cache"):
        found = [f for f in files.walk(f"{root}/{area}") if not is_temp(f.name)]
        usage[area] = {"count": len(found), "bytes": sum(f.size for f in found)}
    segments = segment_files(store)
    overhead = sum(f.size for f, _ in segments)
    for _, name in segments:
        for kind, _, record, _ in read_segment(store, name) or ():
            area = usage["objects" if kind == SEGMENT_OBJECT else "cache"]
            area["count"] += 1
            area["bytes"] += len(record)
            overhead -= len(record)
    usage["segments"] = {"count": len(segments), "bytes": overhead}
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
    packed: list[PackedRow] = []
    for seg_file, seg_name in segment_files(store):
        rows = rows_of_segment(read_segment(store, seg_name) or [], seg_file.mtime)
        objects += rows[0]
        caches += rows[1]
        packed += rows[2]
    return objects, caches, runs, packed


def rows_of_segment(
    records: list[tuple[str, str, bytes, PackedRow]], mtime: float
) -> tuple[list[ObjectRow], list[tuple[CacheEntry, int]], list[PackedRow]]:
    """The index rows of a segment's records (see ``read_segment``) written at ``mtime``."""
    objects, caches, packed = [], [], []
    for kind, rname, blob, place in records:
        if kind == SEGMENT_OBJECT:
            try:
                serializer = parse_header(blob[:HEAD_MAX])[0]
            except CorruptFile:
                continue
            objects.append(ObjectRow(rname, len(blob), serializer, mtime))
        else:
            kept = decode_entry(blob)
            if kept is None or kept.key != rname:
                continue
            caches.append((kept, len(blob)))
        packed.append(place)
    return objects, caches, packed


def segment_files(store: StoreCore) -> list[tuple[FileStat, str]]:
    """The segment files of a store and their names (no temp files, no foreign names)."""
    out = []
    for f in store.seams.objects.walk(f"{store.root}/segments"):
        base = f.name.rsplit("/", 1)[-1]
        if base.endswith(".seg") and NAME.fullmatch(base[:-4]) and f.name[:2] == base[:2]:
            out.append((f, base[:-4]))
    return out


def read_segment(store: StoreCore, name: str) -> list[tuple[str, str, bytes, PackedRow]] | None:
    """Every record of segment ``name`` whose bytes match its TOC: ``(kind, name, bytes,
    place)``; None when the file is missing or its TOC is damaged. (Whether its cache entries
    count is the signer's question.)"""
    data = store.seams.objects.read(segment_path(store.root, name))
    got = records_in(name, data) if data is not None else None
    return None if got is None else got[1]


def verify_segments(store: StoreCore) -> tuple[list[str], list[str]]:
    """``(corrupt object digests, finding lines)`` of the segment files.

    A segment whose TOC is damaged is set aside in ``quarantine/`` whole (the calls it
    recorded execute again). A record whose bytes do not match the TOC, or an object record
    that fails its header, payload or address check, is forgotten by the index (the segment
    stays: its other records are good). The cache entries of a segment not signed by a key
    allowed to write are reported as untrusted (they read as misses; runs replace them).
    """
    corrupt: list[str] = []
    lines: list[str] = []
    for _, name in segment_files(store):
        data = store.seams.objects.read(segment_path(store.root, name))
        if data is None:
            continue
        split = records_in(name, data)
        if split is None:
            lines.append(f"damaged segment {name}: set aside in quarantine/")
            store._quarantine_segment(name)
            continue
        toc, got = split
        good = {(kind, rname) for kind, rname, _, _ in got}
        damaged = [(kind, rname) for kind, rname, _, _, _ in toc if (kind, rname) not in good]
        _, _, block, digest = decode_segment(data)
        why = store.seams.guard.document_problem("segment", digest, block)
        for kind, rname, record, _ in got:
            if kind != SEGMENT_OBJECT:
                if why is not None:
                    lines.append(f"untrusted cache entry {rname}: {why}")
                continue
            try:
                serializer, size_, checksum, head, address, _ = parse_header(record)
                payload = record[head:]
                if address is not None and address != rname:
                    raise CorruptFile(f"its header says it is object {address}")
                if len(payload) != size_ or payload_blake3(payload) != checksum:
                    raise CorruptFile("payload does not match its header")
                try:
                    value = serializers.loads(serializer, payload)
                except SerializationError:
                    continue
                store._check_value(rname, value)
            except CorruptFile:
                damaged.append((kind, rname))
        for kind, rname in damaged:  # set aside (a cache entry: dropped), out of the segment
            if kind == SEGMENT_OBJECT:
                corrupt.append(rname)
                store._quarantine(rname)
            else:
                lines.append(f"damaged cache entry {rname} in segment {name}: dropped")
                store._set_aside(kind, rname)
    return corrupt, lines
