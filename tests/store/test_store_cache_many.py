"""``get_cache_many``: the answers of ``get_cache`` for many keys, read in bulk.

Every case a single lookup decides (the batch, entry files, segment records, a forged or
damaged entry file, a stored output gone) is put in one store, and the bulk answer must be the
one ``get_cache`` gives key by key, with one index query for all the segment records and no
look for an entry file under a ``cache/ab/`` folder that is not there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store
from mlflowkit.store.base import ArtifactStore
from mlflowkit.store.formats import encode_entry
from mlflowkit.trust.signing import document_message, sign
from tests.store.store_helpers import fake_digest
from tests.trust.helpers import signer


def _key(label: str, prefix: str) -> str:
    """A key whose file would be ``cache/<prefix>/...`` (its folder is chosen by the test)."""
    return prefix + fake_digest(label)[2:]


def _entry(store: Store, key: str, value: Any, *, stored: bool = True) -> CacheEntry:
    digest = store.put(value) if stored else fake_digest(f"unstored {value!r}")
    return CacheEntry(key=key, output_digest=digest, step="tests:f", stored=stored)


def _counting(obj: Any, name: str, calls: list[Any]) -> None:
    """Count the calls of ``obj.name`` (an instance attribute over the method)."""
    method: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return method(*args, **kwargs)

    setattr(obj, name, counted)


def _fill(store: Store) -> dict[str, str]:
    """Every case a lookup decides, written into ``store``: label -> key."""
    keys: dict[str, str] = {}
    # in segment files (a run's entries): written by a batch that was then written out
    with store.batched():
        for i in range(5):
            keys[f"segment {i}"] = k = _key(f"segment {i}", "a1")
            store.put_cache(_entry(store, k, ["segment", i]))
        keys["segment unstored"] = k = _key("segment unstored", "a1")
        store.put_cache(_entry(store, k, "derived", stored=False))
        keys["segment, object gone"] = k = _key("segment, object gone", "a1")
        store.put_cache(CacheEntry(key=k, output_digest=fake_digest("never"), step="tests:f"))
    # entry files of their own (written outside a run)
    for i in range(3):
        keys[f"file {i}"] = k = _key(f"file {i}", "b2")
        store.put_cache(_entry(store, k, ["file", i]))
    keys["file, object gone"] = k = _key("file, object gone", "b2")
    store.put_cache(CacheEntry(key=k, output_digest=fake_digest("gone"), step="tests:f"))
    keys["file unstored"] = k = _key("file unstored", "c3")
    store.put_cache(_entry(store, k, "view", stored=False))
    store.sync()
    root = Path(store.root)
    # a forged entry file (no signature) where no other entry is: a miss
    keys["forged"] = k = _key("forged", "d4")
    forged = _entry(store, k, "forged value")
    (root / "cache" / "d4").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "d4" / f"{k}.json").write_bytes(encode_entry(forged))
    # a forged entry file over an entry a segment holds: the segment's entry counts
    over = keys["segment 0"]
    (root / "cache" / "a1").mkdir(parents=True, exist_ok=True)
    mallory = signer("mallory")
    wrong = _entry(store, over, "mallory's value")
    (root / "cache" / "a1" / f"{over}.json").write_bytes(
        encode_entry(wrong, lambda d: sign(mallory, document_message("cache", d)))
    )
    # a damaged entry file: a miss (and deleted)
    keys["damaged"] = k = _key("damaged", "b2")
    store.put_cache(_entry(store, k, "damaged value"))
    path = root / "cache" / "b2" / f"{k}.json"
    path.write_bytes(path.read_bytes()[:-3] + b"xx}")
    # never written, in a folder that is there and in one that is not
    keys["absent, folder there"] = _key("absent 1", "b2")
    keys["absent, no folder"] = _key("absent 2", "e5")
    keys["absent, no folder either"] = _key("absent 3", "f6")
    return keys


def test_bulk_answers_are_those_of_get_cache_key_by_key(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with Store(url) as writer:
        keys = _fill(writer)
    one_by_one = {}
    for label, key in keys.items():
        got = Store(url).get_cache(key)  # a fresh reader for each: nothing learned before
        if got is not None:
            one_by_one[label] = got
    assert set(one_by_one) == {
        *(f"segment {i}" for i in range(5)),
        "segment unstored",
        *(f"file {i}" for i in range(3)),
        "file unstored",
    }
    assert mk.Store(url).get(one_by_one["segment 0"].output_digest) == ["segment", 0]

    reader = Store(url)
    index = reader._idx(flush=False)
    single: list[Any] = []
    many: list[Any] = []
    reads: list[Any] = []
    _counting(index, "find_packed", single)
    _counting(index, "find_packed_many", many)
    _counting(reader._io, "read", reads)
    bulk = reader.get_cache_many([*keys.values(), keys["file 0"]])  # a key twice: once
    assert bulk == {keys[label]: entry for label, entry in one_by_one.items()}
    assert single == []
    assert len(many) == 2  # the segment records' places, then their outputs'
    cache = str(Path(url, "cache"))
    entry_reads = [Path(args[0]).name for args in reads if str(args[0]).startswith(cache)]
    # an entry file was looked for only where its cache/ab/ folder is (not e5/, f6/), once
    assert sorted(entry_reads) == sorted(
        f"{k}.json" for k in keys.values() if k[:2] in {"a1", "b2", "c3", "d4"}
    )


def test_bulk_answers_include_the_open_batch_and_note_what_it_need_not_hide(
    tmp_path: Path,
) -> None:
    url = str(tmp_path / "store")
    with Store(url) as store:
        keys = _fill(store)
        with store.batched():
            kept = _key("batch", "e5")  # its folder is not there: in the batch only
            entry = _entry(store, kept, ["kept"])
            store.put_cache(entry)
            fresh = _key("fresh", "f6")
            got = store.get_cache_many([kept, fresh, keys["file 1"], keys["segment 2"]])
            assert got[kept] == entry
            assert set(got) == {kept, keys["file 1"], keys["segment 2"]}
            batch = store._batch
            assert batch is not None and fresh in batch.absent  # no entry file to hide it
            assert store.get_cache(kept) == entry


def test_a_store_without_segments_answers_alike(memory_store: Store) -> None:
    keys = {}
    for i in range(4):
        keys[i] = k = _key(f"m{i}", "0a" if i % 2 else "1b")
        memory_store.put_cache(_entry(memory_store, k, ["m", i]))
    gone = _key("gone", "0a")
    memory_store.put_cache(CacheEntry(key=gone, output_digest=fake_digest("x"), step="t:f"))
    absent = _key("absent", "2c")
    asked = [*keys.values(), gone, absent]
    bulk = Store(memory_store.url).get_cache_many(asked)
    expected = {k: e for k in asked if (e := Store(memory_store.url).get_cache(k)) is not None}
    assert bulk == expected and set(bulk) == set(keys.values())


def test_a_segment_no_index_knows_is_found_by_a_bulk_lookup(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with Store(url) as store, store.batched():
        key = _key("adopted", "a1")
        entry = _entry(store, key, "adopted value")
        store.put_cache(entry)
    # as if the writer lost its database between the segment file and the rows
    for suffix in ("", "-wal", "-shm"):
        Path(url, "index.sqlite" + suffix).unlink(missing_ok=True)
    assert Store(url).get_cache_many([key, _key("absent", "a1")]) == {key: entry}


def test_a_bad_key_is_refused_as_by_get_cache(local_store: Store) -> None:
    with pytest.raises(mk.StoreError, match="invalid cache key"):
        local_store.get_cache_many(["a" * 64, "../x"])


def test_the_contract_default_asks_key_by_key() -> None:
    class Plain(ArtifactStore):
        url = "memory://plain"

        def __init__(self) -> None:
            self.asked: list[str] = []
            self.entries = {"k1": CacheEntry(key="k1", output_digest="d" * 64)}

        def get_cache(self, key: str) -> CacheEntry | None:
            self.asked.append(key)
            return self.entries.get(key)

    store = Plain()
    assert store.get_cache_many(["k1", "k2"]) == {"k1": store.entries["k1"]}
    assert store.asked == ["k1", "k2"]
