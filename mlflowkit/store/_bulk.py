"""Many cache entries read at once: ``StoreCore.get_cache_many``.

A run whose calls become ready together (a fan-out's elements) asks for all their keys in one
call instead of one lookup each (``mlflowkit.cache.Cache.prefetch``).

Invariants
----------
* The answer for each key is the one ``get_cache`` gives, by the same rules in the same
  order: the open batch first; then the key's entry file, when it is valid and signed by a key
  allowed to write here (a damaged one is deleted); then a segment record; and an entry whose
  output is stored counts only while that object is there (``has``).
* Segment records are found with one index query for all keys, and the outputs of the
  entries found with one more; segment files the index does not know are read into it once per
  store object, as a single lookup does (``StoreCore._reconcile``).
* An entry file is looked for only under a ``cache/ab/`` folder that one listing of ``cache/``
  shows (``ObjectStore.subfolders``): a run's entries live in segments, so this folder is
  mostly empty and most keys need no look at all. A listing that cannot be had means a look
  for every key. Like a single lookup, the answer is that of a moment: an entry written after
  it is found by the next lookup (``Cache.claim`` looks again under the key's lock).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry
    from mlflowkit.store.core import StoreCore

__all__ = ["cache_entries", "stored"]


def cache_entries(store: StoreCore, keys: Iterable[str]) -> dict[str, CacheEntry]:
    """The entries ``store.get_cache`` finds for ``keys``, by key (see the module docstring).

    Raises
    ------
    StoreError
        A key is not a valid name (as ``get_cache``).
    """
    wanted = [store._check(key, "cache key") for key in dict.fromkeys(keys)]
    batch = store._batch
    found: dict[str, CacheEntry] = {}
    rest: list[str] = []
    for key in wanted:
        kept = batch.entries.get(key) if batch is not None else None
        if kept is not None:
            found[key] = kept[0]  # as ``get_cache``: this run's own, its value written first
        else:
            rest.append(key)
    folders = store._io.subfolders(f"{store.root}/cache") if rest else set()
    to_check: dict[str, CacheEntry] = {}
    in_segments: list[str] = []
    for key in rest:
        if folders is None or key[:2] in folders:
            entry = store._entry_file(key, batch)
        else:  # its folder is not there: neither is its file
            entry = None
            if batch is not None:
                batch.absent.add(key)
        if entry is None:
            in_segments.append(key)
        else:
            to_check[key] = entry
    places = store._find_packed_many([f"c:{key}" for key in in_segments])
    for key in in_segments:
        place = places.get(f"c:{key}")
        data = None if place is None else store._packed_at("c", key, place)
        entry = None if data is None else store._entry_record(key, data)
        if entry is not None:
            to_check[key] = entry
    there = stored(store, [e.output_digest for e in to_check.values() if e.stored])
    for key, entry in to_check.items():
        if not entry.stored or entry.output_digest in there:
            found[key] = entry
    return found


def stored(store: StoreCore, digests: Iterable[str]) -> set[str]:
    """Those of ``digests`` that ``store.has``: one index query for all (objects a segment
    holds), then a look for the file of each one no segment holds."""
    batch = store._batch
    out: set[str] = set()
    rest: list[str] = []
    for digest in dict.fromkeys(digests):
        if batch is not None and digest in batch.objects:
            out.add(digest)
            continue
        segment = store._held_in.get(digest)
        if segment is not None and store._segments.exists(segment):
            out.add(digest)
        else:
            rest.append(digest)
    if not rest:
        return out
    found = store._find_packed_many([f"o:{d}" for d in rest], reconcile=False)
    missing = []
    for digest in rest:
        place = found.get(f"o:{digest}")
        held = place is not None and store._segments.exists(place.segment)
        if held or store._io.exists(store._object_path(digest)):
            out.add(digest)
        else:
            missing.append(digest)
    if missing and store._reconcile():  # as ``has`` does: segments no index knew
        out.update(d for d in missing if store.has(d))
    return out
