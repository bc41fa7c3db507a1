"""The BLAKE3 kernels in Numba's CUDA simulator, against the reference ``blake3`` package.

Not collected by the main test session (the file name does not start with ``test_``):
``test_gpu_simulator.py`` runs it with pytest in a fresh process with ``NUMBA_ENABLE_CUDASIM=1``
set before Numba is imported, so the rest of the suite never sees the simulator.

The simulator runs every CUDA thread as a Python thread, so most checks use small thread
blocks that stage whole chunks (few barriers, and a handful of chunks already exercise every
level of the reduction); a few run the default configuration used on real devices.
"""

from __future__ import annotations

import os
import random

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - guard
    pytest.skip("run by test_gpu_simulator.py with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

import blake3 as reference
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import cuda

import mlflowkit.gpu as mkgpu
from mlflowkit.errors import HashingError
from mlflowkit.hashing.device import _device
from mlflowkit.hashing.device._blake3 import KernelConfig

#: Input lengths of the official BLAKE3 test vectors (input byte i is i % 251).
OFFICIAL_LENGTHS = [
    0, 1, 1023, 1024, 1025, 2048, 2049, 3072, 3073, 4096, 4097, 5120, 5121, 6144, 6145,
    7168, 7169, 8192, 8193, 16384, 31744, 102400,
]  # fmt: skip

#: First 32 bytes of the official vectors' "hash" for a few lengths (pinned against drift).
OFFICIAL_DIGESTS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
}

#: 32 chunks per block, merges of 4, whole chunks staged: fast in the simulator.
SMALL = KernelConfig(chunk_threads=32, merge_threads=4, stage_blocks=16)
#: 4 chunks per block and pairwise merges: many reduction levels for few chunks.
TINY = KernelConfig(chunk_threads=4, merge_threads=2, stage_blocks=16)
#: 8 chunks per block, 4 blocks per stage: partial stages and carried leftovers.
MIXED = KernelConfig(chunk_threads=8, merge_threads=2, stage_blocks=4)
#: More threads than words in a stage's row (as in the default configuration): each pass of
#: the block's loads covers several chunks.
WIDE = KernelConfig(chunk_threads=32, merge_threads=4, stage_blocks=1)


def official_input(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def device_digest(data: bytes, config: KernelConfig) -> bytes:
    arr = cuda.to_device(np.frombuffer(data, dtype=np.uint8))
    return _device.digest(arr, allow_copy=False, config=config)


def expected(data: bytes) -> bytes:
    return reference.blake3(data).digest()


def test_simulator_is_on() -> None:
    assert mkgpu.simulated()
    assert not mkgpu.available()


@pytest.mark.parametrize("n", OFFICIAL_LENGTHS)
def test_official_vector_lengths(n: int) -> None:
    data = official_input(n)
    assert device_digest(data, SMALL) == expected(data)


@pytest.mark.parametrize("n", [0, 1, 1024, 1025, 102400])
def test_official_vectors_default_config(n: int) -> None:
    data = official_input(n)
    got = mkgpu.blake3(cuda.to_device(np.frombuffer(data, dtype=np.uint8)))
    assert got == expected(data)
    if n in OFFICIAL_DIGESTS:
        assert got.hex() == OFFICIAL_DIGESTS[n]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 16, 33, 64])
def test_chunk_boundaries(k: int) -> None:
    # 1024k - 1, 1024k, 1024k + 1 bytes of random data, in two configurations.
    rng = random.Random(k)
    data = rng.randbytes(1024 * k + 1)
    for n in (1024 * k - 1, 1024 * k, 1024 * k + 1):
        config = TINY if n % 2 else MIXED
        assert device_digest(data[:n], config) == expected(data[:n]), (n, config)


@pytest.mark.parametrize(
    "n", [0, 1, 1025, 32 * 1024 - 1, 32 * 1024, 64 * 1024 + 5, 96 * 1024 + 1023]
)
def test_whole_blocks_then_a_partial_one(n: int) -> None:
    # One or more thread blocks whose chunks are all whole, then a partial one.
    data = random.Random(n).randbytes(n)
    assert device_digest(data, WIDE) == expected(data)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=9 * 1024 + 7))
def test_random_buffers(data: bytes) -> None:
    assert device_digest(data, TINY) == expected(data)


ARRAYS = {
    "uint8": np.arange(3000, dtype=np.uint32).astype(np.uint8),
    "float64-2d": np.linspace(-1, 1, 13 * 7).reshape(13, 7),
    "float32-fortran": np.asfortranarray(np.linspace(0, 5, 45, dtype=np.float32).reshape(9, 5)),
    "int16-3d": (np.arange(60, dtype=np.int16) - 30).reshape(3, 4, 5),
    "bool": np.arange(77) % 3 == 0,
    "complex128": np.arange(10) * (1 + 2j),
    "0d": np.array(3.5),
    "empty": np.zeros((0, 3)),
    "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    "datetime64": np.arange(5).astype("datetime64[s]"),
    "big-fortran": np.asfortranarray(np.arange(64 * 70, dtype=np.int32).reshape(64, 70)),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_device_data_digest_dtypes_and_shapes(name: str) -> None:
    host = ARRAYS[name]
    dev = cuda.to_device(host)
    want = expected(np.ascontiguousarray(host).tobytes())  # tobytes() is C order
    if name in ("float64-2d", "float32-fortran", "0d"):
        assert mkgpu.device_data_digest(dev) == want  # the public function, default kernels
    assert _device.digest(dev, allow_copy=True, config=SMALL) == want


BASE = np.arange(40 * 50, dtype=np.uint32).astype(np.uint8).reshape(40, 50)


@pytest.mark.parametrize(
    "index",
    [
        (slice(None, None, 3), slice(1, None, 2)),
        (slice(None, None, -1), slice(None, None, -2)),
        (slice(5, 6), slice(None)),
    ],
)
def test_device_data_digest_of_views(index: tuple[slice, ...]) -> None:
    dev = cuda.to_device(BASE)
    view = dev[index]
    want = expected(np.ascontiguousarray(BASE[index]).tobytes())
    assert _device.digest(view, allow_copy=True, config=SMALL) == want


def test_transposed_and_misaligned_views() -> None:
    dev = cuda.to_device(BASE)
    assert _device.digest(dev.T, allow_copy=True, config=SMALL) == expected(BASE.T.tobytes())
    flat = dev.reshape(2000)
    for start, stop in ((1, 2000), (3, 1503), (2, 4), (1, 6)):
        want = expected(BASE.reshape(2000)[start:stop].tobytes())
        assert _device.digest(flat[start:stop], allow_copy=False, config=SMALL) == want


def test_blake3_refuses_non_contiguous() -> None:
    dev = cuda.to_device(BASE)
    with pytest.raises(HashingError, match="C-contiguous"):
        mkgpu.blake3(dev.T)


@pytest.mark.parametrize("obj", [np.zeros(3, dtype=np.uint8), b"abc", 5])
def test_host_values_are_refused(obj: object) -> None:
    assert not mkgpu.is_device_array(obj)
    with pytest.raises(HashingError, match="expected a device array"):
        mkgpu.blake3(obj)
    with pytest.raises(HashingError, match="expected a device array"):
        mkgpu.device_data_digest(obj)


def test_simulated_device_arrays_are_device_arrays() -> None:
    assert mkgpu.is_device_array(cuda.to_device(np.zeros(3)))
    assert mkgpu.is_device_array(cuda.device_array((2, 2)))
