"""Any single flipped bit in a signed pickle's file, or in a signed cache entry, is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlflowkit as mk
from mlflowkit.records import CacheEntry
from mlflowkit.store.formats import pack_header, payload_blake3
from mlflowkit.trust.keys import load_signer
from mlflowkit.trust.signing import object_message, sign
from tests.trust.helpers import evil_payload, object_path


@pytest.fixture(scope="module")
def signed_evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[mk.Store, str, bytes, Path]:
    """A store holding a pickle signed by the owner that would, if unpickled, make a file."""
    root = tmp_path_factory.mktemp("flips")
    store = mk.Store(root / "store")
    store.create()
    sentinel = root / "owned"
    payload = evil_payload(sentinel)
    digest = "ab" * 32
    sig = sign(load_signer(), object_message(digest, "pickle", payload_blake3(payload)))
    data = pack_header("pickle", payload, digest, signature=sig) + payload
    return store, digest, data, sentinel


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bit=st.integers(min_value=0))
def test_a_flipped_bit_in_a_signed_pickle_never_loads(
    signed_evil: tuple[mk.Store, str, bytes, Path], bit: int
) -> None:
    store, digest, data, sentinel = signed_evil
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    path = object_path(store, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(flipped))
    with pytest.raises((mk.CorruptObjectError, mk.UntrustedObjectError)):
        mk.Store(store.url).get(digest)
    assert not sentinel.exists()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bit=st.integers(min_value=0))
def test_a_flipped_bit_in_a_signed_cache_entry_is_a_miss(
    signed_evil: tuple[mk.Store, str, bytes, Path], bit: int
) -> None:
    store = signed_evil[0]
    key = "cd" * 32
    target = store.put([1, 2])
    store.put_cache(CacheEntry(key, target, "step"))
    path = Path(store.root, "cache", key[:2], f"{key}.json")
    data = path.read_bytes()
    assert mk.Store(store.url).get_cache(key) is not None
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(flipped))
    got = mk.Store(store.url).get_cache(key)
    # a flip may still read as the very same entry (a hex digit of the signature turned upper
    # case is the same byte), never as another one
    assert got is None or (got.key == key and got.output_digest == target)
