"""The cache of step calls: one object that looks up, claims, records and forgets entries.

Every decision "is this step call a hit, may I execute it, record it" goes through a ``Cache``:
the scheduler's walk (and ``explain``'s dry run of it), ``stepcall.execute``'s single flight
and output writes, the driver's packs, the dask executor's recovery and the registry's
consumed artifacts. The ``Cache`` talks to the store through the ``ArtifactStore`` contract
only (``get_cache``, ``get_cache_many``, ``put_cache``, ``drop_cache``, ``lock``, ``has``,
``read_pack``, ``write_pack``).

Invariants
----------
* ``lookup`` reads the pack first (entries the last run of this pipeline hit or wrote, read in
  one go), then the store. A pack entry is trusted as it is, except that with ``check=True``
  (the values the caller will load) its stored output must exist, else the store decides.
* ``prefetch`` asks the store once for many keys the pack does not list (a fan-out's): it
  remembers the hits, and the keys found absent. ``lookup`` answers a prefetched key from that
  after the pack: a hit as the store's own lookup would have (checked as it does), an absence
  once (then forgotten: a later lookup of the key asks the store). An absence is also forgotten
  once this object records or notes the key; ``forget`` drops any prefetched answer; ``claim``
  never uses one (so a stale absence costs one more locked lookup, never a wrong result).
* ``claim`` is single flight across threads, processes and machines sharing a store: it holds
  the store's lock on the key and looks the key up under it, so of two callers of the same
  key one executes and the other finds its entry. A lock that cannot be had in time only
  costs duplicate work, never a wrong result (writes are idempotent).
* ``prefetch(..., hold=True)`` is the same single flight for many keys at once: it takes the
  locks of all the keys it found absent without waiting, then looks them up again under those
  locks in one call. It holds them all or none: when one lock is taken elsewhere, it lets go
  of the others, and each call claims its key itself (so a run never waits for a key while
  holding one that another run may be waiting for). A key found under the lock is a hit like
  any prefetched one, and its lock is let go at once. The others stay in ``held`` until
  ``release`` (after their entries are recorded: the store keeps the lock until the entry is
  written, as a claim does) or ``release_all``.
* ``record`` writes an entry only after the value it points at was written (the caller's
  order: ``stepcall.write_output``), so a cache entry never points at a missing object.
* ``forget`` drops an entry everywhere this object knows it: the store, the pack, the
  prefetched answers and the entries of this run; the next lookup of the key misses.
* ``used`` holds the entries this run hit or recorded, by key: what ``save`` writes as the next
  pack (only when it differs from the pack read). A gather's entry is kept there without item
  digests, which every run reaching the gather knows already (kept, they would make the pack
  of a wide fan-out grow by ~75 bytes per element, read again on every run). A gather records
  none (``stepcall._meta``); ``packed`` drops those of entries written by earlier versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from mlflowkit.records import METRICS, CacheEntry

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["SINGLE_FLIGHT_WAIT_S", "Cache", "packed"]

#: How long a step call waits for another run executing the same call before doing it itself.
SINGLE_FLIGHT_WAIT_S = 6 * 3600.0


def packed(entry: CacheEntry, gather: bool) -> CacheEntry:
    """``entry`` as a pack keeps it: a gather's (``gather``) without item digests (only an
    entry written by an earlier version, read from the store, has them)."""
    if not gather or "items" not in entry.meta:
        return entry
    meta = {k: v for k, v in entry.meta.items() if k != "items"}
    return replace(entry, meta=meta)


class Cache:
    """The cache entries of ``store``, read through ``pack`` first; see the module docstring.

    Parameters
    ----------
    store:
        Where entries live (the source of truth).
    pack:
        Entries read in one go (``Cache.open`` reads the pipeline's pack); checked before use
        as ``lookup`` says. Empty by default.
    """

    __slots__ = ("absent", "fetched", "held", "pack", "store", "used")

    def __init__(self, store: ArtifactStore, pack: dict[str, CacheEntry] | None = None) -> None:
        self.store = store
        self.pack: dict[str, CacheEntry] = pack if pack is not None else {}
        #: the entries this run hit or recorded, by key (the next pack)
        self.used: dict[str, CacheEntry] = {}
        #: prefetched hits, by key, and the keys prefetched and found absent (each used once)
        self.fetched: dict[str, CacheEntry] = {}
        self.absent: set[str] = set()
        #: keys whose single-flight lock this object holds for their calls (``prefetch``)
        self.held: dict[str, AbstractContextManager[bool]] = {}

    @classmethod
    def open(cls, store: ArtifactStore, pack_name: str | None) -> Cache:
        """A cache over ``store`` that reads pack ``pack_name`` first (None: no pack)."""
        return cls(store, store.read_pack(pack_name) if pack_name is not None else None)

    # -----------------------------------------------------------------------------------
    def lookup(
        self, key: str, *, check: bool = False, gather: bool = False, store: bool = True
    ) -> CacheEntry | None:
        """The entry for ``key``: from the pack when it lists it, else from the store.

        ``check``: the caller will load the value, so a pack entry's stored output must exist
        (when it does not, the store's own entry decides, which also checks it). Any other
        pack entry whose value turns out gone when a step needs it is ``forget``-ed by the
        scheduler, which executes its producer again. ``gather``: the key is a gather's
        (its entry is kept for the pack without item digests). ``store=False``: the pack and
        the prefetched answers only (the caller looks the key up under the single-flight lock
        next, which decides).
        """
        entry = self.pack.get(key)
        if entry is not None and check and entry.stored and not self.store.has(entry.output_digest):
            entry = None
        if entry is None:
            entry = self.fetched.get(key)
        if entry is None:
            absent = self.absent
            if absent and key in absent:  # prefetched: the store has none (asked once)
                absent.discard(key)
                return None
            if not store:
                return None
            entry = self.store.get_cache(key)
            if entry is None:
                return None
        self.used[key] = packed(entry, gather) if gather else entry
        return entry

    def prefetch(self, keys: Iterable[str], *, hold: bool = False) -> None:
        """Ask the store once (``get_cache_many``) for those of ``keys`` the pack does not
        list, so that their ``lookup`` asks nothing (see the module docstring).

        ``hold``: also take the single-flight locks of the keys found absent (all or none),
        so that their calls need no ``claim``: those held are in ``held`` afterwards.
        """
        pack, fetched = self.pack, self.fetched
        wanted = [k for k in dict.fromkeys(keys) if k not in pack and k not in fetched]
        if not wanted:
            return
        found = self.store.get_cache_many(wanted)
        fetched.update(found)
        missing = [k for k in wanted if k not in found]
        self.absent.update(missing)
        if hold and missing:
            self._hold(missing)

    def _hold(self, keys: list[str]) -> None:
        """Take the locks of ``keys`` (absent a moment ago) without waiting, all or none; then
        look them up again under the locks: those found are hits, the others stay held."""
        taken: dict[str, AbstractContextManager[bool]] = {}
        try:
            for key in keys:
                if key in self.held:
                    continue
                lock = self.store.lock(key, timeout=0.0)
                if not lock.__enter__():
                    lock.__exit__(None, None, None)
                    break  # another caller has it: each call claims its own key
                taken[key] = lock
            else:
                found = self.store.get_cache_many(list(taken)) if taken else {}
                for key, entry in found.items():  # recorded meanwhile by another caller
                    self.fetched[key] = entry
                    self.absent.discard(key)
                    taken.pop(key).__exit__(None, None, None)
                self.held.update(taken)
                taken = {}
        finally:
            _release(taken.values())

    def release(self, key: str) -> None:
        """Let go of the lock ``prefetch`` took for ``key``, if it holds one: its call ended
        (the store keeps it until the entry recorded under it is written)."""
        lock = self.held.pop(key, None)
        if lock is not None:
            lock.__exit__(None, None, None)

    def release_all(self) -> None:
        """Let go of every lock ``prefetch`` took (the walk is over)."""
        held, self.held = self.held, {}
        _release(held.values())

    @contextmanager
    def claim(self, key: str, timeout: float = SINGLE_FLIGHT_WAIT_S) -> Iterator[CacheEntry | None]:
        """Hold the single-flight lock on ``key``; yield its entry when another caller recorded
        one meanwhile (use it), else None (execute, ``record``, then leave the block).

        The lock is the store's (``ArtifactStore.lock``): bounded by ``timeout``, broken when
        its holder died. After ``timeout`` the caller executes anyway (duplicate work only).
        """
        with self.store.lock(key, timeout=timeout):
            yield self.store.get_cache(key)

    def record(self, entry: CacheEntry, *, gather: bool = False) -> None:
        """Write ``entry`` to the store (its value already is) and keep it for the pack."""
        self.store.put_cache(entry)
        self.absent.discard(entry.key)
        self.used[entry.key] = packed(entry, gather)

    def note(self, entry: CacheEntry, *, gather: bool = False) -> None:
        """Keep for the pack an entry that a task recorded elsewhere (e.g. in a worker)."""
        self.absent.discard(entry.key)
        self.used[entry.key] = packed(entry, gather)

    def forget(self, key: str) -> None:
        """Drop the entry for ``key`` from the store, the pack and this run's entries (its
        stored value was found corrupt or missing): the next ``lookup`` misses."""
        self.store.drop_cache(key)
        self.pack.pop(key, None)
        self.fetched.pop(key, None)
        self.absent.discard(key)
        self.used.pop(key, None)

    def changed(self) -> bool:
        """Whether this run's entries differ from the pack read (then ``save`` writes one).

        An entry differs by its output digest, or by its metrics (a forced re-execution that
        made the same output logged its own: the pack must not keep reporting the earlier ones).
        """
        pack, used = self.pack, self.used
        if pack.keys() != used.keys():
            return True
        for k, e in used.items():
            p = pack[k]
            if p.output_digest != e.output_digest:
                return True
            if p.meta is not e.meta and p.meta.get(METRICS) != e.meta.get(METRICS):
                return True
        return False

    def save(self, pack_name: str) -> bool:
        """Write this run's entries as pack ``pack_name`` when they changed; True if written."""
        if not self.changed():
            return False
        self.store.write_pack(pack_name, self.used.values())
        return True


def _release(locks: Iterable[AbstractContextManager[bool]]) -> None:
    """Exit every one of ``locks``; the first error is raised once all were tried."""
    error: BaseException | None = None
    for lock in list(locks):
        try:
            lock.__exit__(None, None, None)
        except BaseException as exc:  # raised below, once all are released
            if error is None:
                error = exc
    if error is not None:
        raise error
