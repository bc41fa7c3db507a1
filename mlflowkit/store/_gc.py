"""Garbage collection of a store: keep what recent runs and pins reference, delete the rest.

Invariants
----------
* What the newest ``keep_last`` runs reference (step keys, inputs, outputs, output templates),
  run ``pins`` and explicit pins are kept, and so is every object a kept cache entry points at.
* Runs in progress hold a lease: while a run is live (marked ``running`` and its owner alive;
  on another host, for up to a day) gc keeps every file written since it started, what the
  last finished run of its pipeline used and what the cache packs list (where it reads its
  cache hits). So a gc never takes a value from under a running run.
* Only names the store makes, in its own folders (no links), are deleted (see ``Store``); a
  folder that is not a store is an error, never cleaned.
* A dry run deletes nothing and reports what a real one would delete.
* Cache packs are deleted whenever anything else is (they may list deleted entries; the next
  run of each pipeline writes its pack again).
* A segment file with a dead record is replaced by one holding its live records only (written
  and indexed before the old one is deleted); one with no live record is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import StoreError
from mlflowkit.store import owner
from mlflowkit.store.formats import (
    SEGMENT_ENTRY,
    SEGMENT_OBJECT,
    decode_entry,
    decode_pack,
    template_digests,
)
from mlflowkit.store.layout import QUARANTINED
from mlflowkit.store.maintenance import read_segment, segment_files

if TYPE_CHECKING:
    from mlflowkit.records import RunRecord
    from mlflowkit.store.core import StoreCore
    from mlflowkit.store.objects import FileStat

__all__ = ["LEASE_SLACK_S", "RUNNING_GRACE_S", "GcReport", "collect"]

#: gc keeps runs marked running on another host (or with no owner) this long (then: crashed)
RUNNING_GRACE_S = 24 * 3600.0
#: files this many seconds older than a live run's start still count as its own (clock skew
#: between this machine and a remote filesystem's timestamps)
LEASE_SLACK_S = 300.0


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Store.gc` deleted (or would delete, with ``dry_run``)."""

    objects_deleted: int
    objects_kept: int
    cache_deleted: int
    cache_kept: int
    bytes_freed: int
    tmp_deleted: int
    quarantine_deleted: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return asdict(self)


def _references(record: RunRecord) -> tuple[set[str], set[str]]:
    """The digests and cache keys a run record references."""
    digests = set(template_digests(record.output))
    keys: set[str] = set()
    for s in record.steps:
        digests.update(d for d in s.inputs.values() if isinstance(d, str))
        if s.output_digest:
            digests.add(s.output_digest)
        if s.key:
            keys.add(s.key)
    return digests, keys


def _live(record: RunRecord, now: float) -> bool:
    """Whether a run is in progress: marked running, its owner not provably gone (readers
    already show those as interrupted), and alive here or started less than a day ago."""
    if record.status != "running":
        return False
    who = record.owner
    if who.get("host") == owner.HOST and type(who.get("pid")) is int:
        return True  # on this host: dead owners read as interrupted, so this one lives
    return now - record.started_at < RUNNING_GRACE_S


def collect(
    store: StoreCore,
    *,
    keep_last: int,
    pins: Iterable[str] | None,
    older_than: float | None,
    dry_run: bool,
) -> GcReport:
    """``store.gc(...)``: see :meth:`mlflowkit.store.Store.gc`."""

    if keep_last < 0:
        raise StoreError(f"keep_last must be >= 0, got {keep_last}", url=store.url)
    store._require()  # never lay out (or delete in) a folder that is not a store
    if not dry_run:
        store.create()  # a store of an earlier version gets its marker
    records = store.runs()
    now = time.time()
    live: set[str] = set(pins or ())
    live_keys: set[str] = set()
    leases = [r for r in records if _live(r, now)]
    leased = {r.id for r in leases}
    for i, record in enumerate(records):
        live.update(record.pins)
        if i < keep_last or record.id in leased:
            digests, keys = _references(record)
            live.update(digests)
            live_keys.update(keys)
    # a run in progress reads its cache hits from its pipeline's last run and from the packs,
    # and writes new files from when it started: that is its lease
    since: float | None = None
    if leases:
        since = min(r.started_at for r in leases) - LEASE_SLACK_S
        pipelines = {r.pipeline for r in leases}
        for record in records:
            if record.pipeline in pipelines and record.status != "running":
                pipelines.discard(record.pipeline)
                digests, keys = _references(record)
                live.update(digests)
                live_keys.update(keys)
        for f in store._own_files("packs"):
            data = store._io.read(f"{store.root}/packs/{f.name}")
            entries = decode_pack(data) if data is not None else None
            for key, packed in (entries or {}).items():
                live_keys.add(key)
                live.add(packed.output_digest)
    idx = store._idx()
    for d in list(live):
        live_keys.update(idx.cache_keys_for(d))

    def young(f: FileStat) -> bool:
        if since is not None and f.mtime >= since:
            return True
        return older_than is not None and now - f.mtime < older_than

    freed = 0
    dead_keys: list[str] = []
    cache_kept = 0
    segments: list[tuple[FileStat, str, list[tuple[str, str, bytes, Any]]]] = []
    for seg_file, seg_name in segment_files(store):  # readable ones (verify sees to the rest)
        seg_records = read_segment(store, seg_name)
        if seg_records is not None:
            segments.append((seg_file, seg_name, seg_records))
    kept_records: dict[str, list[tuple[str, str, bytes]]] = {}
    dropped: set[str] = set()  # segments with at least one dead record
    for seg_file, seg_name, seg_records in segments:
        kept_records[seg_name] = []
        for kind, rname, blob, _ in seg_records:
            if kind != SEGMENT_ENTRY:
                continue
            if rname in live_keys or young(seg_file):
                cache_kept += 1
                kept_records[seg_name].append((kind, rname, blob))
                kept_entry = decode_entry(blob)
                if kept_entry is not None:
                    live.add(kept_entry.output_digest)
                continue
            dead_keys.append(rname)
            dropped.add(seg_name)
            freed += len(blob)
    for f, key in store._object_files("cache", ".json"):
        if key in live_keys or young(f):
            cache_kept += 1
            data = store._io.read(f"{store.root}/cache/{f.name}")
            entry = decode_entry(data) if data is not None else None
            if entry is not None:
                live.add(entry.output_digest)
            continue
        dead_keys.append(key)
        freed += f.size
        if not dry_run:
            store._io.remove(f"{store.root}/cache/{f.name}")
    dead_objects: list[str] = []
    objects_kept = 0
    for seg_file, seg_name, seg_records in segments:
        for kind, rname, blob, _ in seg_records:
            if kind != SEGMENT_OBJECT:
                continue
            if rname in live or young(seg_file):
                objects_kept += 1
                kept_records[seg_name].append((kind, rname, blob))
                continue
            dead_objects.append(rname)
            dropped.add(seg_name)
            freed += len(blob)
    for f, digest in store._object_files("objects"):
        if digest in live or young(f):
            objects_kept += 1
            continue
        dead_objects.append(digest)
        freed += f.size
        if not dry_run:
            store._io.remove(f"{store.root}/objects/{f.name}")
    quarantined = [f for f in store._own_files("quarantine") if QUARANTINED.fullmatch(f.name)]
    stale_tmp = store.stale_temps()
    freed += sum(f.size for f in quarantined) + sum(f.size for f in stale_tmp)
    if not dry_run:
        for f in quarantined:
            store._io.remove(f"{store.root}/quarantine/{f.name}")
        for f in stale_tmp:
            store._io.remove(f"{store.root}/tmp/{f.name}")
        if dead_keys or dead_objects:  # packs may list what was deleted: the next run remakes them
            store.drop_packs()
        idx.remove_cache(dead_keys)
        idx.remove_objects(dead_objects)
        for seg_name in sorted(dropped):  # their live records move to a new segment
            store._rewrite_segment(seg_name, kept_records[seg_name])
        if dead_keys or dead_objects or quarantined:
            store._guard.append_audit(
                "gc",
                store.url,
                {
                    "objects": len(dead_objects),
                    "cache": len(dead_keys),
                    "quarantined": len(quarantined),
                    "bytes": freed,
                    "keep_last": keep_last,
                },
            )
    return GcReport(
        objects_deleted=len(dead_objects),
        objects_kept=objects_kept,
        cache_deleted=len(dead_keys),
        cache_kept=cache_kept,
        bytes_freed=freed,
        tmp_deleted=len(stale_tmp),
        quarantine_deleted=len(quarantined),
        dry_run=dry_run,
    )
