"""BLAKE3 on a real CUDA device, with CuPy arrays (skipped without CuPy and a device)."""

from __future__ import annotations

import os
from typing import Any

import blake3 as reference
import numpy as np
import pytest

import mlflowkit.gpu as mkgpu

pytestmark = pytest.mark.gpu

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    pytest.skip("the CUDA simulator is enabled; these need a real device", allow_module_level=True)
cupy: Any = pytest.importorskip("cupy", reason="needs CuPy and a CUDA device")
if not mkgpu.available():
    pytest.skip("needs a CUDA device (numba.cuda.is_available() is False)", allow_module_level=True)


def _random(n: int, seed: int) -> Any:
    return cupy.random.default_rng(seed).integers(0, 256, n, dtype=cupy.uint8)


@pytest.mark.parametrize(
    "n",
    [0, 1, 3, 4, 63, 64, 65, 1023, 1024, 1025, 3 * 1024 + 1, 128 * 1024, 129 * 1024 + 7,
     (1 << 20) + 1, (64 << 20) + 17],
)  # fmt: skip
def test_blake3_matches_reference(n: int) -> None:
    buf = _random(n, n)
    assert mkgpu.blake3(buf) == reference.blake3(cupy.asnumpy(buf).tobytes()).digest()


def test_official_vector_inputs() -> None:
    for n in (0, 1, 1023, 1024, 1025, 2049, 8193, 16384, 31744, 102400):
        host = (np.arange(n) % 251).astype(np.uint8)
        assert mkgpu.blake3(cupy.asarray(host)) == reference.blake3(host.tobytes()).digest()


@pytest.mark.parametrize(
    "make",
    [
        lambda: cupy.arange(1000, dtype=cupy.float64).reshape(25, 40),
        lambda: cupy.asfortranarray(cupy.arange(1000, dtype=cupy.float32).reshape(25, 40)),
        lambda: cupy.arange(5000, dtype=cupy.int16).reshape(50, 100)[::3, 1::2],
        lambda: cupy.arange(777, dtype=cupy.uint8)[::-1],
        lambda: cupy.arange(999, dtype=cupy.uint8)[1:],
        lambda: cupy.asarray(3.5),
        lambda: cupy.zeros((0, 4)),
    ],
)
def test_device_data_digest_is_c_order_bytes(make: Any) -> None:
    arr = make()
    want = reference.blake3(np.ascontiguousarray(cupy.asnumpy(arr)).tobytes()).digest()
    assert mkgpu.device_data_digest(arr) == want


def test_numba_device_arrays() -> None:
    from numba import cuda

    host = np.arange(12345, dtype=np.int32)
    assert mkgpu.blake3(cuda.to_device(host)) == reference.blake3(host.tobytes()).digest()


def test_work_on_another_stream_is_waited_for() -> None:
    with cupy.cuda.Stream(non_blocking=True):
        buf = cupy.arange(32 << 20, dtype=cupy.uint8)
        got = mkgpu.blake3(buf)
    assert got == reference.blake3(cupy.asnumpy(buf).tobytes()).digest()


def test_blake3_refuses_strided_buffers() -> None:
    from mlflowkit.errors import HashingError

    with pytest.raises(HashingError, match="C-contiguous"):
        mkgpu.blake3(cupy.arange(100, dtype=cupy.uint8)[::2])
