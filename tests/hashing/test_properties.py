"""Hypothesis properties of hash_value: process independence, equality, no near-miss collisions."""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import blake3
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlflowkit.hashing import digest_value, hash_value
from mlflowkit.hashing.values import encode

ROOT = Path(__file__).resolve().parents[2]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.binary(max_size=6),
)
hashables = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=4
)
small_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
)
values = st.recursive(
    scalars | small_arrays,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3) | st.integers(-5, 5), inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=3),
    ),
    max_leaves=12,
)


def strict(x: Any) -> Any:
    """Type-strict structural equality key for the generated values (the hash's notion)."""
    if isinstance(x, np.ndarray):
        little = x.astype(x.dtype.newbyteorder("<"))
        return ("ndarray", little.dtype.str, x.shape, np.ascontiguousarray(little).tobytes())
    if isinstance(x, float):
        return ("float", "nan" if math.isnan(x) else x.hex())
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(strict(e) for e in x))
    if isinstance(x, dict):
        return ("dict", tuple(sorted(repr((strict(k), strict(v))) for k, v in x.items())))
    if isinstance(x, (set, frozenset)):
        return (type(x).__name__, tuple(sorted(repr(strict(e)) for e in x)))
    return (type(x).__name__, x)


_CHILD = """
import json, pickle, sys
from mlflowkit.hashing import digest_value, hash_value
batch = pickle.loads(sys.stdin.buffer.read())
print(json.dumps([hash_value(v) for v in batch]))
"""


@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(values, min_size=25, max_size=50))
def test_digests_are_equal_in_fresh_interpreters_with_other_hash_seeds(batch: list[Any]) -> None:
    expected = [hash_value(v) for v in batch]
    payload = pickle.dumps(batch)
    for seed in ("0", "12345", "4000000000"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=payload,
            capture_output=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        assert json.loads(out.stdout) == expected


@settings(deadline=None, max_examples=150)
@given(st.lists(values, min_size=2, max_size=6))
def test_equal_digest_exactly_for_strictly_equal_values(batch: list[Any]) -> None:
    digests = [hash_value(v) for v in batch]
    keys = [strict(v) for v in batch]
    for i in range(len(batch)):
        for j in range(len(batch)):
            assert (digests[i] == digests[j]) == (keys[i] == keys[j])


@settings(deadline=None, max_examples=150)
@given(st.lists(values, min_size=2, max_size=8))
def test_encodings_are_prefix_free(batch: list[Any]) -> None:
    encodings = [encode(v) for v in batch]
    for a in encodings:
        for b in encodings:
            assert a == b or not a.startswith(b)


@settings(deadline=None, max_examples=150)
@given(values)
def test_digest_is_blake3_of_the_encoding(x: Any) -> None:
    assert hash_value(x) == blake3.blake3(encode(x)).hexdigest()
    assert digest_value(x) == blake3.blake3(encode(x)).digest()


@settings(deadline=None, max_examples=100)
@given(st.dictionaries(st.text(max_size=4), values, max_size=8), st.randoms())
def test_dict_and_set_order_never_matter(d: dict[str, Any], rnd: Any) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    assert hash_value(dict(items)) == hash_value(d)
    keys = list(d)
    rnd.shuffle(keys)
    assert hash_value(set(keys)) == hash_value(set(d))
    assert hash_value(frozenset(keys)) == hash_value(frozenset(d))


@settings(deadline=None, max_examples=100)
@given(values)
def test_copies_hash_equal(x: Any) -> None:
    assert hash_value(copy.deepcopy(x)) == hash_value(x)
    assert hash_value(pickle.loads(pickle.dumps(x))) == hash_value(x)


@settings(deadline=None, max_examples=150)
@given(values)
def test_wrapping_never_collides(x: Any) -> None:
    digests = [
        hash_value(x),
        hash_value([x]),
        hash_value((x,)),
        hash_value([[x]]),
        hash_value({"k": x}),
    ]
    assert len(set(digests)) == len(digests)


@settings(deadline=None, max_examples=150)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_numbers_of_different_types_never_collide(n: int) -> None:
    candidates: list[Any] = [n, float(n), str(n), str(n).encode(), np.int64(n), complex(n), [n]]
    if n in (0, 1):
        candidates.append(bool(n))
    digests = [hash_value(c) for c in candidates]
    assert len(set(digests)) == len(digests)


@settings(deadline=None, max_examples=100)
@given(hnp.arrays(np.float64, st.just((2, 3)), elements=st.floats(-1e6, 1e6, width=32)))
def test_dtype_and_shape_are_identity(a: np.ndarray[Any, Any]) -> None:
    variants = [a, a.astype(np.float32), a.reshape(3, 2), a.reshape(6), a.view(np.int64)]
    digests = [hash_value(v) for v in variants]
    assert len(set(digests)) == len(digests)
    assert hash_value(np.asfortranarray(a)) == hash_value(a)
    assert hash_value(a.T.copy()) == hash_value(a.T)


def test_reused_hashers_are_never_shared_between_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from mlflowkit.hashing._leaves import small_digest

    inputs = [os.urandom(n % 200) for n in range(4000)]
    expected = [blake3.blake3(data).digest() for data in inputs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(small_digest, inputs, chunksize=7))
    assert got == expected
