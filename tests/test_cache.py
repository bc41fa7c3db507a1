"""The Cache object: lookup (pack first), claim (single flight), record, forget, save."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import blake3

import mlflowkit as mk
from mlflowkit.cache import Cache, packed
from mlflowkit.records import CacheEntry
from mlflowkit.store.base import ArtifactStore


def key_of(label: str) -> str:
    return blake3.blake3(label.encode()).hexdigest()


def entry_for(store: mk.Store, key: str, value: Any, **meta: Any) -> CacheEntry:
    """A cache entry for ``key`` whose value is stored."""
    digest = store.put(value)
    return CacheEntry(key=key, output_digest=digest, step="tests:f", meta=meta)


def test_lookup_misses_then_reads_what_record_wrote(store: mk.Store) -> None:
    cache = Cache(store)
    key = key_of("a")
    assert cache.lookup(key) is None
    assert cache.used == {}
    entry = entry_for(store, key, [1, 2])
    cache.record(entry)
    assert store.get_cache(key) == entry  # written to the store
    assert Cache(store).lookup(key) == entry  # another cache (another run) finds it
    assert cache.used == {key: entry}  # kept for the next pack


def test_lookup_reads_the_pack_before_the_store(store: mk.Store) -> None:
    key = key_of("b")
    in_store = entry_for(store, key, "from the store")
    store.put_cache(in_store)
    in_pack = entry_for(store, key, "from the pack")
    cache = Cache(store, {key: in_pack})
    assert cache.lookup(key) == in_pack
    assert cache.used[key] == in_pack


def test_a_checked_pack_entry_whose_value_is_gone_falls_back_to_the_store(
    store: mk.Store,
) -> None:
    key = key_of("c")
    in_store = entry_for(store, key, "kept")
    store.put_cache(in_store)
    gone = CacheEntry(key=key, output_digest=key_of("never stored"), step="tests:f")
    cache = Cache(store, {key: gone})
    assert cache.lookup(key) == gone  # unchecked: the pack is trusted
    assert cache.lookup(key, check=True) == in_store  # checked: the store decides
    assert Cache(store, {key: gone}).lookup(key_of("other"), check=True) is None


def test_forget_drops_the_entry_from_store_pack_and_this_run(store: mk.Store) -> None:
    key = key_of("d")
    entry = entry_for(store, key, 42)
    store.put_cache(entry)
    cache = Cache(store, {key: entry})
    assert cache.lookup(key) == entry
    cache.forget(key)
    assert cache.lookup(key) is None
    assert store.get_cache(key) is None
    assert key not in cache.pack and key not in cache.used


def test_claim_lets_one_of_two_threads_execute(store: mk.Store) -> None:
    key = key_of("e")
    executed: list[str] = []
    found: dict[str, CacheEntry | None] = {}
    both_started = threading.Barrier(2)

    def call(who: str) -> None:
        cache = Cache(store)
        both_started.wait()
        with cache.claim(key, timeout=30) as entry:
            found[who] = entry
            if entry is None:  # nobody recorded it: execute, then record
                executed.append(who)
                time.sleep(0.2)
                cache.record(entry_for(store, key, "the one result"))

    threads = [threading.Thread(target=call, args=(who,)) for who in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(executed) == 1
    other = "second" if executed == ["first"] else "first"
    got = found[other]
    assert got is not None and store.get(got.output_digest) == "the one result"


def test_save_writes_the_pack_only_when_the_entries_changed(store: mk.Store) -> None:
    key = key_of("f")
    entry = entry_for(store, key, [1])
    store.put_cache(entry)
    cache = Cache.open(store, "p-test")
    assert cache.pack == {}
    assert cache.lookup(key) == entry
    assert cache.save("p-test") is True
    # a pack keeps what a lookup needs of an entry (its output digest and facts)
    assert {k: e.output_digest for k, e in store.read_pack("p-test").items()} == {
        key: entry.output_digest
    }
    again = Cache.open(store, "p-test")
    assert list(again.pack) == [key]
    found = again.lookup(key)
    assert found is again.pack[key]  # from the pack, not the store
    assert again.save("p-test") is False  # the same entries: nothing written
    other = entry_for(store, key_of("f2"), [2])
    again.record(other)
    assert again.save("p-test") is True
    assert set(store.read_pack("p-test")) == {key, other.key}


def test_a_gather_is_packed_without_its_item_digests(store: mk.Store) -> None:
    key = key_of("g")
    entry = entry_for(store, key, [1, 2], len=2, items=[["x", None], ["y", None]])
    store.put_cache(entry)
    cache = Cache(store)
    assert cache.lookup(key, gather=True) == entry  # the caller gets the whole entry
    assert cache.used[key].meta == {"len": 2}
    assert packed(entry, False) is entry  # any other step's items are kept


class NoPacks(ArtifactStore):
    """A store without packs: it inherits the contract's defaults (only what Cache uses)."""

    url = "memory://"

    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}

    def get_cache(self, key: str) -> CacheEntry | None:
        return self.entries.get(key)

    def put_cache(self, entry: CacheEntry) -> None:
        self.entries[entry.key] = entry


def test_a_store_without_packs_runs_entry_by_entry() -> None:
    store = NoPacks()
    cache = Cache.open(store, "p-test")
    assert cache.pack == {}
    entry = CacheEntry(key=key_of("h"), output_digest=key_of("v"), step="tests:f")
    cache.record(entry)
    assert cache.save("p-test") is True  # handed to the store, which keeps nothing
    assert store.read_pack("p-test") == {}
    assert Cache.open(store, "p-test").lookup(entry.key) == entry


class Asked(NoPacks):
    """A store that says what it was asked: bulk lookups and single ones."""

    def __init__(self) -> None:
        super().__init__()
        self.single: list[str] = []
        self.bulk: list[list[str]] = []

    def get_cache(self, key: str) -> CacheEntry | None:
        self.single.append(key)
        return super().get_cache(key)

    def get_cache_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        asked = list(keys)
        self.bulk.append(asked)
        return {k: e for k in asked if (e := self.entries.get(k)) is not None}

    def drop_cache(self, key: str) -> None:
        self.entries.pop(key, None)

    def lock(self, key: str, timeout: float = 0.0) -> AbstractContextManager[bool]:
        return nullcontext(True)


def _entry(label: str) -> CacheEntry:
    return CacheEntry(key=key_of(label), output_digest=key_of(f"v {label}"), step="tests:f")


def test_prefetch_asks_once_for_what_the_pack_does_not_list() -> None:
    store = Asked()
    hit, in_pack = _entry("hit"), _entry("in pack")
    store.entries[hit.key] = hit
    miss = key_of("miss")
    cache = Cache(store, {in_pack.key: in_pack})
    cache.prefetch([hit.key, miss, in_pack.key, hit.key])
    assert store.bulk == [[hit.key, miss]]
    assert cache.lookup(hit.key) == hit and cache.lookup(miss) is None
    assert cache.lookup(in_pack.key) == in_pack
    assert store.single == []  # every lookup answered without asking the store
    assert cache.used == {hit.key: hit, in_pack.key: in_pack}
    assert cache.lookup(hit.key) == hit and store.single == []  # a hit stays known
    # an absence is used once: the next lookup asks the store, which may have it by now
    late = CacheEntry(key=miss, output_digest=key_of("late"), step="tests:f")
    store.entries[miss] = late
    assert cache.lookup(miss) == late and store.single == [miss]
    cache.prefetch([hit.key, in_pack.key])  # known already: nothing asked
    assert len(store.bulk) == 1
    # a caller that looks up under the lock next (store=False) still gets a prefetched hit
    fresh = Cache(store)
    fresh.prefetch([hit.key, key_of("none")])
    assert fresh.lookup(hit.key, store=False) == hit
    assert fresh.lookup(key_of("none"), store=False) is None and fresh.absent == set()


def test_claim_and_forget_never_use_a_stale_prefetched_answer() -> None:
    store = Asked()
    cache = Cache(store)
    found, gone = _entry("written meanwhile"), _entry("forgotten")
    store.entries[gone.key] = gone
    cache.prefetch([found.key, gone.key])
    store.entries[found.key] = found  # another run recorded it after the prefetch
    with cache.claim(found.key) as entry:
        assert entry == found  # the claim decides under the lock, from the store
    cache.forget(gone.key)
    assert cache.lookup(gone.key) is None and store.single[-1] == gone.key
    # what this cache records or notes is no longer absent
    cache.prefetch([key_of("a"), key_of("b")])
    recorded, noted = _entry("a"), _entry("b")
    cache.record(recorded)
    cache.note(noted)
    store.entries[noted.key] = noted
    assert cache.lookup(recorded.key) == recorded and cache.lookup(noted.key) == noted


@mk.step
def _plus_one(x: int) -> int:
    return x + 1


@mk.pipeline
def _line(n: int, start: int = 0) -> int:
    x = start
    for _ in range(n):
        x = _plus_one(x)
    return x


@mk.pipeline
def _other_line(n: int, start: int = 0) -> int:  # the same calls, another pipeline's pack
    x = start
    for _ in range(n):
        x = _plus_one(x)
    return x


class _CountingStore(mk.Store):
    lookups = 0

    def get_cache(self, key: str) -> CacheEntry | None:
        type(self).lookups += 1
        return super().get_cache(key)


def test_calls_run_here_are_looked_up_once_under_the_lock_and_their_hits_packed(
    tmp_path: Any,
) -> None:
    """On the in-thread executor a call not in the pack is looked up once (single flight's
    locked lookup decides), not once before and once under the lock; a hit found there is
    reported cached and kept in the run's pack, so the next run reads it from the pack."""
    url = str(tmp_path / "s")
    _CountingStore.lookups = 0
    run = _line.plan(n=20).run(store=_CountingStore(url), executor="local")
    assert run.output == 20 and all(s.status == "executed" for s in run.steps)
    assert _CountingStore.lookups == 20  # once per call (it was 40)
    _CountingStore.lookups = 0
    other = _other_line.plan(n=20).run(store=_CountingStore(url), executor="local")
    assert other.output == 20 and all(s.status == "cached" for s in other.steps)
    assert all(s.attempts == 0 for s in other.steps)
    assert _CountingStore.lookups == 20
    _CountingStore.lookups = 0  # its hits were packed: the next run asks the store nothing
    again = _other_line.plan(n=20).run(store=_CountingStore(url), executor="local")
    assert all(s.status == "cached" for s in again.steps)
    assert _CountingStore.lookups == 0
