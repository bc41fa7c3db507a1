"""Checks that import Numba without the simulator, run in a fresh process.

Not collected by the main test session: ``test_gpu_api.py`` runs it with pytest in a
subprocess (without ``NUMBA_ENABLE_CUDASIM``), so that importing ``numba.cuda`` here never
decides the simulator question for the rest of the suite.

* The compression function, compiled for the CPU with ``numba.njit`` from the same source as
  the device code, hashes like the reference when driven by a plain BLAKE3 tree walk. This
  checks Numba's integer typing of the device arithmetic (which the simulator, running NumPy
  scalars, cannot) and the left-complete tree built by merging pairs and carrying odd leftovers.
* Where a CUDA toolkit's NVVM is installed, the kernels compile to PTX for sm_90 without any
  floating-point instruction, local memory, or call (everything inlined, all in registers).
* Without a device: ``available()`` is False and hashing fails with a clear ExecutorError.
"""

from __future__ import annotations

import os
import re
import types
from typing import Any

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):  # pragma: no cover - guard
    pytest.skip("run by test_gpu_api.py without the CUDA simulator", allow_module_level=True)

import blake3 as reference
import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import mlflowkit.gpu as mkgpu
from mlflowkit.errors import ExecutorError
from mlflowkit.hashing.device import _blake3 as kernels

IV = tuple(np.uint32(x) for x in kernels.IV)


@pytest.fixture(scope="module")
def cpu_compress() -> Any:
    return kernels.make_compress(numba.njit)


def tree_digest(data: bytes, compress: Any) -> bytes:
    """BLAKE3 by chunks and a level-by-level merge with carried leftovers (as the kernels)."""
    chunks = [data[i : i + 1024] for i in range(0, len(data), 1024)] or [b""]
    cvs = []
    for index, chunk in enumerate(chunks):
        blocks = [chunk[j : j + 64] for j in range(0, len(chunk), 64)] or [b""]
        cv = IV
        for b, block in enumerate(blocks):
            flags = kernels.CHUNK_START if b == 0 else 0
            if b == len(blocks) - 1:
                flags |= kernels.CHUNK_END | (kernels.ROOT if len(chunks) == 1 else 0)
            words = tuple(np.frombuffer(block.ljust(64, b"\0"), dtype="<u4").astype(np.uint32))
            cv = compress(cv, words, index, len(block), flags)
        cvs.append(cv)
    while len(cvs) > 1:
        root = kernels.ROOT if len(cvs) == 2 else 0
        merged = [
            compress(IV, cvs[i] + cvs[i + 1], 0, 64, kernels.PARENT | root)
            for i in range(0, len(cvs) - 1, 2)
        ]
        cvs = merged + ([cvs[-1]] if len(cvs) % 2 else [])
    return np.asarray(cvs[0], dtype="<u4").tobytes()


@pytest.mark.parametrize(
    "n", [0, 1, 63, 64, 65, 1023, 1024, 1025, 3073, 7169, 31744, 33 * 1024 + 1]
)
def test_cpu_compiled_compress_matches_reference(cpu_compress: Any, n: int) -> None:
    data = bytes(i % 251 for i in range(n))
    assert tree_digest(data, cpu_compress) == reference.blake3(data).digest()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=20 * 1024), counter=st.integers(0, 2**63 - 1))
def test_cpu_compiled_compress_random(cpu_compress: Any, data: bytes, counter: int) -> None:
    assert tree_digest(data, cpu_compress) == reference.blake3(data).digest()
    # The counter's high word (chunk indices from 2**32 on) is formed the same way compiled.
    block = tuple(np.arange(16, dtype=np.uint32))
    python = kernels.make_compress(lambda fn: fn)
    assert cpu_compress(IV, block, counter, 64, 3) == python(IV, block, counter, 64, 3)


def test_availability_without_simulator() -> None:
    from numba import cuda

    assert not mkgpu.simulated()
    assert mkgpu.available() == bool(cuda.is_available())


class _FakeDeviceArray:
    """Exports a CUDA array interface; never dereferenced in these tests."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": (4,), "typestr": "|u1", "data": (0, False), "version": 3}


def test_no_device_is_a_clear_error() -> None:
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert mkgpu.is_device_array(_FakeDeviceArray())
    with pytest.raises(ExecutorError, match="needs a CUDA device"):
        mkgpu.blake3(_FakeDeviceArray())
    with pytest.raises(ExecutorError, match="needs a CUDA device"):
        mkgpu.device_data_digest(_FakeDeviceArray())


def test_kernels_compile_for_sm90(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba import cuda
    from numba import types as nt
    from numba.cuda import dispatcher
    from numba.cuda.cudadrv.error import NvvmSupportError

    if not cuda.is_available():
        # Device functions ask the current device for its compute capability; pretend an H200.
        if not hasattr(dispatcher, "get_current_device"):
            pytest.skip("this Numba compiles device functions differently")
        monkeypatch.setattr(
            dispatcher,
            "get_current_device",
            lambda: types.SimpleNamespace(compute_capability=(9, 0)),
        )
    chunk, merge = kernels.make_kernels(kernels.DEFAULT_CONFIG)
    u32 = nt.Array(nt.uint32, 1, "C")
    u8 = nt.Array(nt.uint8, 1, "C")
    i64s = nt.Array(nt.int64, 1, "C")
    signatures = [
        (chunk.py_func, (u32, u8, nt.int64, nt.int64, nt.int64, u32)),
        (merge.py_func, (u32, nt.int64, nt.int64, u32)),
        (kernels._gather_kernel().py_func, (u8, nt.int64, i64s, i64s, nt.int64, nt.int64, u8)),
    ]
    bodies = []
    for fn, sig in signatures:
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        except NvvmSupportError as exc:
            pytest.skip(f"no CUDA toolkit (NVVM) here: {exc}")
        body = ptx[ptx.index(".entry") :]
        assert not re.search(r"\.f(16|32|64)\b", body), f"{fn.__name__}: floating point"
        assert ".local" not in body, f"{fn.__name__}: local memory"
        assert "call." not in body, f"{fn.__name__}: a device function was not inlined"
        bodies.append(body)
    assert "shf." in bodies[0], "rotations should compile to funnel shifts"
