"""Cache keys: pinned values (a change invalidates every user's cache) and their framing."""

from __future__ import annotations

import hypothesis.strategies as st
from blake3 import blake3
from hypothesis import given

import mlflowkit as mk
from mlflowkit.keys import KEY_VERSION, KeyMaker


def _pinned(a: int, b: str = "x") -> int:
    """A step whose key depends on nothing but fixed text (``version=``, no packages)."""
    return a


_pinned.__module__ = "pinned"  # the same identity however the tests are imported
pinned = mk.step(version="1")(_pinned)


_HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def test_keys_are_pinned() -> None:
    keys = KeyMaker()
    assert keys.key(pinned, {"a": "0" * 64}) == (
        "01845945006b0dd45aaf790fc648a9374560710bade48220aa60eab303a6469b"
    )
    assert keys.key(pinned, {"b": "2" * 64, "a": "1" * 64}) == (
        "a06482ae738bf25f9e682caf2f6348e39644f42ebf3df7f31433367fd53d9d03"
    )


@given(st.dictionaries(st.sampled_from(["a", "b", "c_d", "x1"]), _HEX, min_size=1))
def test_a_key_is_the_digest_of_its_documented_framing(inputs: dict[str, str]) -> None:
    middle = "".join(f"{name}\t{digest}\n" for name, digest in sorted(inputs.items()))
    text = f"{KEY_VERSION}\n{pinned.qualified_name}\nversion:1\n{middle}packages"
    assert KeyMaker().key(pinned, inputs) == blake3(text.encode()).hexdigest()
