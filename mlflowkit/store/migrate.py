"""Copying a store to another place: from a laptop's folder + SQLite to S3 + PostgreSQL.

Layer 5: works on two stores (``StoreCore``, what ``mk.Store`` is built on) through their seams.
``mlflowkit store migrate SOURCE TARGET [--index URL]`` is its command.

What is copied: every file the store keeps as the truth — objects, cache entries, finished run
records, packs, the registry's journal, the policy, the audit trail and the marker. What is
not: locks, temp files, quarantined objects, records of runs still in progress, and the index,
which the target builds from the copied files (its registry rows come back from the journal).
Nothing is re-executed: the next run on the target is fully cached.

Invariants:

* The source is only read. Each file is written to the target atomically and read back from
  the source only once; a file the target already holds with the same bytes is skipped, so an
  interrupted copy resumes where it stopped when run again.
* Objects are checked against their digest on the way (the target never receives a corrupt
  object; a corrupt one in the source is reported and skipped — ``mlflowkit store verify`` on
  the source says more).
* The target must be empty of runs or hold the same store (same owner in its marker): copying
  into a different store is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mlflowkit.errors import StoreError
from mlflowkit.store.core import StoreCore
from mlflowkit.store.layout import MARKER, STARTED
from mlflowkit.store.objects import ObjectStore

__all__ = ["CopyReport", "copy_store"]

#: (folder, how it is listed): fan-out folders are walked, flat ones listed
_AREAS = (
    ("objects", "walk"),
    ("segments", "walk"),
    ("cache", "walk"),
    ("packs", "list"),
    ("runs", "list"),
    ("registry/versions", "walk"),
    ("registry/promotions", "walk"),
    ("policy", "list"),
    ("audit", "list"),
)


@dataclass
class CopyReport:
    """What ``copy_store`` did: files copied, files already there, bytes, and problems."""

    copied: int = 0
    skipped: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)


def _files(objects: ObjectStore, area: str, how: str) -> list[tuple[str, int]]:
    folder = f"{objects.root}/{area}"
    found = objects.walk(folder) if how == "walk" else objects.listdir(folder)
    return [(f"{area}/{f.name}", f.size) for f in found]


def copy_store(
    source: StoreCore,
    target: StoreCore,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Copy ``source``'s files into ``target`` and build ``target``'s index from them.

    Parameters
    ----------
    source, target:
        Stores (``mk.Store``; any store exposing its seams). ``target`` may use another
        filesystem and another index (``mk.Store("s3://…", index="postgresql://…")``).
    progress:
        Called as ``progress(area, done, total)`` after each file.

    Raises
    ------
    StoreError
        ``source`` is not a store, ``target`` is another store, or a write failed (the files
        copied so far stay; running again resumes).
    """
    if not isinstance(source, StoreCore) or not isinstance(target, StoreCore):
        raise StoreError("copy_store needs two mlflowkit stores (mk.Store), got other objects")
    src, dst = source.seams.objects, target.seams.objects
    if not source.exists():
        raise StoreError(
            f"nothing to copy: {source.seams.url} is not a store (no {MARKER}). Check the "
            "source URL.",
            url=source.seams.url,
        )
    marker = src.read(f"{src.root}/{MARKER}")
    theirs = dst.read(f"{dst.root}/{MARKER}")
    if theirs is not None and marker is not None and theirs != marker:
        raise StoreError(
            f"{target.seams.url} is already another store (its marker differs from "
            f"{source.seams.url}'s); copy into an empty location instead. Nothing was written.",
            url=target.seams.url,
        )
    report = CopyReport()
    plan = [(area, _files(src, area, how)) for area, how in _AREAS]
    for area, files in plan:
        for done, (name, size) in enumerate(files, 1):
            if area == "runs" and name.endswith(STARTED):
                continue  # a run still in progress (or one that died): not a finished record
            _copy_one(src, dst, name, size, area == "objects", report)
            if progress is not None:
                progress(area, done, len(files))
    if marker is not None and theirs is None:
        dst.write_atomic(f"{dst.root}/{MARKER}", (marker,), True)
    dst.sync()
    target.close()  # drop what the target may have opened before its files were there
    report.index = target.reindex()
    return report


def _copy_one(
    src: ObjectStore, dst: ObjectStore, name: str, size: int, is_object: bool, report: CopyReport
) -> None:
    there = dst.read(f"{dst.root}/{name}") if dst.exists(f"{dst.root}/{name}") else None
    data = src.read(f"{src.root}/{name}")
    if data is None:
        return  # removed meanwhile (gc on the source)
    if there == data:
        report.skipped += 1
        return
    if is_object and not _intact(name, data):
        report.corrupt.append(name.rsplit("/", 1)[-1])
        return
    dst.write_atomic(f"{dst.root}/{name}", (data,), False)
    report.copied += 1
    report.bytes += len(data)


def _intact(name: str, data: bytes) -> bool:
    """Whether an object file's bytes hold what its header says (address and payload hash)."""
    from mlflowkit.store.formats import CorruptFile, parse_header, payload_blake3

    try:
        _, length, digest, head, address, _ = parse_header(data)
    except CorruptFile:
        return False
    payload = memoryview(data)[head:]
    if len(payload) != length or payload_blake3(payload) != digest:
        return False
    return address is None or address == name.rsplit("/", 1)[-1]
