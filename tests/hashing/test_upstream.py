"""The placeholder for upstream values in cache keys encodes exactly as its declared hash."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from mlflowkit.executors.base import Input
from mlflowkit.hashing import hash_value
from mlflowkit.hashing.values import encode, type_name
from mlflowkit.keys import KeyMaker, Upstream


@given(st.text(alphabet="0123456789abcdef", max_size=64))
def test_upstream_fast_encoder_gives_the_bytes_of_its_mlflowkit_hash(digest: str) -> None:
    general = b"R" + encode(type_name(Upstream)) + encode(Upstream(digest).__mlflowkit_hash__())
    assert encode(Upstream(digest)) == general


def test_a_gathered_list_of_upstream_values_hashes_by_their_digests() -> None:
    items = tuple(Input(f"n{i}", f"{i:064x}", None) for i in range(3))
    expected = hash_value(tuple(Upstream(i.digest) for i in items))
    assert KeyMaker.input_digest(items) == expected
    changed = (*items[:2], Input("n2", "f" * 64, None))
    assert KeyMaker.input_digest(changed) != expected


@given(
    st.lists(
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | st.text(max_size=70),
        max_size=20,
    ),
    st.sampled_from([tuple, list]),
)
def test_the_one_pass_gather_digest_equals_the_general_encoding(
    digests: list[str], kind: type
) -> None:
    items = kind(Input(f"n{i}", d, None) for i, d in enumerate(digests))
    assert KeyMaker.input_digest(items) == hash_value(kind(Upstream(d) for d in digests))
