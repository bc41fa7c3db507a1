"""Cache entries: round-trip, self-checksum, dangling entries, the on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest
from store_helpers import fake_digest

from mlflowkit.errors import StoreError
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store


def cache_path(store: Store, key: str) -> str:
    return f"{store.root}/cache/{key[:2]}/{key}.json"


def test_cache_round_trip(any_store: Store) -> None:
    d = any_store.put([1, 2, 3], fake_digest("out"))
    entry = CacheEntry(
        key=fake_digest("k"),
        output_digest=d,
        step="pkg.mod:fit",
        size=3,
        meta={"len": 3, "type": "builtins.list"},
        created_at=123.5,
        run_id="r1",
    )
    assert any_store.get_cache(entry.key) is None
    any_store.put_cache(entry)
    assert any_store.get_cache(entry.key) == entry
    any_store.drop_cache(entry.key)
    assert any_store.get_cache(entry.key) is None
    any_store.drop_cache(entry.key)  # dropping twice is fine


def test_entry_whose_object_is_gone_reads_as_missing(any_store: Store) -> None:
    entry = CacheEntry(key=fake_digest("k"), output_digest=fake_digest("never-stored"))
    any_store.put_cache(entry)
    assert any_store.get_cache(entry.key) is None


def test_entry_not_stored_on_purpose_needs_no_object(any_store: Store) -> None:
    entry = CacheEntry(key=fake_digest("k"), output_digest=fake_digest("view"), stored=False)
    any_store.put_cache(entry)
    assert any_store.get_cache(entry.key) == entry


def test_entry_file_format_carries_its_own_checksum(local_store: Store) -> None:
    d = local_store.put(1, fake_digest("one"))
    entry = CacheEntry(key=fake_digest("k"), output_digest=d, step="m:f")
    local_store.put_cache(entry)
    data = Path(cache_path(local_store, entry.key)).read_bytes()
    doc = json.loads(data)
    assert doc["entry"] == entry.to_dict()
    raw = json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert doc["checksum"] == blake3.blake3(raw).hexdigest()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-5],
        lambda b: b.replace(b'"step":"m:f"', b'"step":"m:g"'),
        lambda b: b"",
        lambda b: b"not json at all",
    ],
    ids=["truncated", "edited", "empty", "junk"],
)
def test_corrupt_entry_reads_as_missing_and_is_removed(local_store: Store, damage: object) -> None:
    d = local_store.put(1, fake_digest("one"))
    entry = CacheEntry(key=fake_digest("k"), output_digest=d, step="m:f")
    local_store.put_cache(entry)
    path = Path(cache_path(local_store, entry.key))
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    assert local_store.get_cache(entry.key) is None
    assert not path.exists()


def test_entry_under_the_wrong_key_is_refused(local_store: Store) -> None:
    d = local_store.put(1, fake_digest("one"))
    a = CacheEntry(key=fake_digest("a"), output_digest=d)
    local_store.put_cache(a)
    b_path = Path(cache_path(local_store, fake_digest("b")))
    b_path.parent.mkdir(parents=True, exist_ok=True)
    b_path.write_bytes(Path(cache_path(local_store, a.key)).read_bytes())
    assert local_store.get_cache(fake_digest("b")) is None


def test_invalid_keys_are_refused(any_store: Store) -> None:
    with pytest.raises(StoreError, match="invalid cache key"):
        any_store.get_cache("../x")
    with pytest.raises(StoreError, match="invalid output digest"):
        any_store.put_cache(CacheEntry(key=fake_digest("k"), output_digest="../../x"))


def test_a_second_store_instance_sees_entries_at_once(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with Store(url) as a, Store(url) as b:
        d = a.put("v", fake_digest("v"))
        a.put_cache(CacheEntry(key=fake_digest("k"), output_digest=d))
        got = b.get_cache(fake_digest("k"))
        assert got is not None and b.get(got.output_digest) == "v"
