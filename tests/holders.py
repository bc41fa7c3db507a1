"""Where a store holds an object or a cache entry, for tests that damage or remove it.

A run keeps small objects and its cache entries in segment files (``segments/``); bigger
objects and what is written outside a run have files of their own (``objects/``, ``cache/``).
These helpers find the bytes wherever they are, so a test damages what the store really holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflowkit.store.formats import decode_segment
from mlflowkit.store.maintenance import read_segment, segment_files
from mlflowkit.store.segments import segment_path

__all__ = [
    "entry_bytes",
    "flip_last_byte",
    "held_entry_keys",
    "held_records",
    "object_bytes",
    "place_of",
    "remove_held",
]


def place_of(store: Any, kind: str, name: str) -> tuple[Path, int, int]:
    """``(file, start, length)`` of object (``kind="o"``) or cache entry (``"c"``) ``name``."""
    own = Path(store._object_path(name) if kind == "o" else store._cache_path(name))
    if own.exists():
        return own, 0, own.stat().st_size
    store.sync()
    place = store._find_packed(f"{kind}:{name}")
    assert place is not None, f"{kind}:{name} is held nowhere in {store.url}"
    path = Path(segment_path(store.root, place.segment))
    start = decode_segment(path.read_bytes())[1] + place.offset
    return path, start, place.length


def held_entry_keys(store: Any) -> list[str]:
    """The keys of the cache entries held in segment files (whole records only)."""
    return [
        rname
        for _, name in segment_files(store)
        for kind, rname, _, _ in read_segment(store, name) or ()
        if kind == "c"
    ]


def held_records(store: Any) -> dict[str, list[int]]:
    """The sizes of the records segment files hold, by area (``objects``, ``cache``)."""
    out: dict[str, list[int]] = {"objects": [], "cache": []}
    for _, name in segment_files(store):
        for kind, _, blob, _ in read_segment(store, name) or ():
            out["objects" if kind == "o" else "cache"].append(len(blob))
    return out


def object_bytes(store: Any, digest: str) -> bytes:
    """The bytes an object's file would hold (its own file, or its record in a segment)."""
    path, start, length = place_of(store, "o", digest)
    return path.read_bytes()[start : start + length]


def entry_bytes(store: Any, key: str) -> bytes:
    """The bytes of a cache entry (its own file, or its record in a segment)."""
    path, start, length = place_of(store, "c", key)
    return path.read_bytes()[start : start + length]


def flip_last_byte(store: Any, digest: str, kind: str = "o") -> None:
    """Flip the last byte of an object (its payload) or of a cache entry, where it is held."""
    path, start, length = place_of(store, kind, digest)
    data = bytearray(path.read_bytes())
    data[start + length - 1] ^= 0x01
    path.write_bytes(bytes(data))


def remove_held(store: Any, name: str, kind: str = "o") -> None:
    """Make an object or cache entry gone, as a lost file would: its own file is deleted; a
    segment record is left out of its segment (written again without it), while the index
    still points at the old, deleted segment."""
    path, _, _ = place_of(store, kind, name)
    if path.suffix != ".seg":
        path.unlink()
        return
    segment = path.name[: -len(".seg")]
    records = read_segment(store, segment) or []
    keep = [(k, n, b) for k, n, b, _ in records if (k, n) != (kind, name)]
    store._rewrite_segment(segment, keep)  # the index still names the old one for this record
