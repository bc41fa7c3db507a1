"""How fast can any BLAKE3 kernel of this shape go on this GPU? The compression ceiling.

BLAKE3 hashes 64 bytes per compression (7 rounds of 8 ``G`` mixes of 32-bit adds, xors and
rotations), and a 1 KiB chunk is 16 compressions in a row; the tree of parents adds one
compression per chunk (1/16 more). So, whatever the memory system does, hashing can go no faster
than ``64 bytes x compressions per second / (1 + 1/16)``.

This module measures the compressions per second of two register-only kernels, with no memory
traffic at all (each thread chains ``cv = compress(cv, m)`` on values it holds):

``numba``
    the very ``compress`` device function that ``mlflowkit.gpu`` hashes with;
``cuda-c``
    the same compression written in CUDA C (funnel-shift rotations, three-input adds), compiled
    by NVRTC through CuPy: what the vendor's own compiler makes of it.

Both are checked against the CPU compression (``make_compress(numba.njit)``) on the values of one
thread, so a fast wrong kernel cannot pass. The result rows give each kernel's compression rate
as "GB/s of input" and the hashing ceiling it implies. (A nominal figure from the INT32 units
alone — multiprocessors x 64 operations per clock x clock / ~672 operations per compression —
comes out *below* the measurement: the compiler issues part of the additions as ``IMAD.IADD``
on the floating-point pipe, so only a measurement gives the device's real ceiling.)
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from numba import cuda  # a module global, so that the CUDA simulator can stand in for it

#: the message word order of each of BLAKE3's seven rounds (the permutation applied repeatedly)
_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)


def _schedule() -> list[list[int]]:
    order = list(range(16))
    rounds = []
    for _ in range(7):
        rounds.append(order)
        order = [order[i] for i in _PERMUTATION]
    return rounds


def cuda_c_source() -> str:
    """CUDA C for ``ceiling_c(out, iters)``: each thread chains ``iters`` compressions."""
    mixes = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15))
    diagonals = ((0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
    body = []
    for order in _schedule():
        for i, (a, b, c, d) in enumerate(mixes + diagonals):
            mx, my = order[2 * i], order[2 * i + 1]
            body.append(f"G(v[{a}], v[{b}], v[{c}], v[{d}], m[{mx}], m[{my}]);")
    rounds = "\n        ".join(body)
    return f"""
#define ROTR(x, n) __funnelshift_r((x), (x), (n))
#define G(a, b, c, d, mx, my) \\
    a = a + b + (mx); d = ROTR(d ^ a, 16); c = c + d; b = ROTR(b ^ c, 12); \\
    a = a + b + (my); d = ROTR(d ^ a, 8); c = c + d; b = ROTR(b ^ c, 7);
__constant__ unsigned int IV[8] = {{0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                                    0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u}};
extern "C" __global__ void ceiling_c(unsigned int* out, int iters) {{
    unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int cv[8], m[16], v[16];
    #pragma unroll
    for (int i = 0; i < 8; ++i) cv[i] = IV[i] ^ t;
    #pragma unroll
    for (int i = 0; i < 16; ++i) m[i] = t * 0x9E3779B9u + (unsigned int)i;
    for (int it = 0; it < iters; ++it) {{
        #pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = cv[i];
        v[8] = IV[0]; v[9] = IV[1]; v[10] = IV[2]; v[11] = IV[3];
        v[12] = (unsigned int)it; v[13] = 0u; v[14] = 64u; v[15] = 0u;
        {rounds}
        #pragma unroll
        for (int i = 0; i < 8; ++i) cv[i] = v[i] ^ v[i + 8];
    }}
    #pragma unroll
    for (int i = 0; i < 8; ++i) out[8 * t + i] = cv[i];
}}
"""


def _reference(thread: int, iters: int) -> list[int]:
    """The CPU result of thread ``thread``'s chain of compressions."""
    import numba

    from mlflowkit.hashing.device import _blake3

    compress = _blake3.make_compress(numba.njit)
    cv = tuple(np.uint32(w ^ thread) for w in _blake3.IV)
    m = tuple(np.uint32((thread * 0x9E3779B9 + i) & 0xFFFFFFFF) for i in range(16))
    for it in range(iters):
        cv = compress(cv, m, np.uint64(it), np.uint32(64), np.uint32(0))
    return [int(w) for w in cv]


def _numba_kernel() -> Any:
    from mlflowkit.hashing.device import _blake3

    compress = _blake3.make_compress(_blake3._device_jit())
    iv = tuple(np.uint32(w) for w in _blake3.IV)

    @cuda.jit
    def ceiling_numba(out: Any, iters: Any) -> None:
        t = cuda.grid(1)
        u = np.uint32(t)
        k = np.uint32(0x9E3779B9)
        cv = (
            np.uint32(iv[0] ^ u),
            np.uint32(iv[1] ^ u),
            np.uint32(iv[2] ^ u),
            np.uint32(iv[3] ^ u),
            np.uint32(iv[4] ^ u),
            np.uint32(iv[5] ^ u),
            np.uint32(iv[6] ^ u),
            np.uint32(iv[7] ^ u),
        )
        m = (
            np.uint32(u * k),
            np.uint32(u * k + np.uint32(1)),
            np.uint32(u * k + np.uint32(2)),
            np.uint32(u * k + np.uint32(3)),
            np.uint32(u * k + np.uint32(4)),
            np.uint32(u * k + np.uint32(5)),
            np.uint32(u * k + np.uint32(6)),
            np.uint32(u * k + np.uint32(7)),
            np.uint32(u * k + np.uint32(8)),
            np.uint32(u * k + np.uint32(9)),
            np.uint32(u * k + np.uint32(10)),
            np.uint32(u * k + np.uint32(11)),
            np.uint32(u * k + np.uint32(12)),
            np.uint32(u * k + np.uint32(13)),
            np.uint32(u * k + np.uint32(14)),
            np.uint32(u * k + np.uint32(15)),
        )
        for it in range(iters):
            cv = compress(cv, m, np.uint64(it), np.uint32(64), np.uint32(0))
        for i in range(8):
            out[8 * t + i] = cv[i]

    return ceiling_numba


def simulate_check(blocks: int = 2, threads: int = 4, iters: int = 2) -> bool:
    """Run the Numba ceiling kernel (in the simulator, or on a device) against the CPU."""
    from mlflowkit.hashing.device import _blake3

    out = cuda.device_array(8 * blocks * threads, dtype="uint32")
    _blake3._launch(_numba_kernel(), blocks, threads, out, iters)
    got = out.copy_to_host()
    return all(
        [int(w) for w in got[8 * t : 8 * t + 8]] == _reference(t, iters)
        for t in range(blocks * threads)
    )


def ceiling(
    report: Any, cupy: Any, repeats: int, *, iters: int = 256, blocks_per_sm: int = 16
) -> None:
    """Measure both kernels' compression rates and add the rows to ``report`` ("ceiling")."""
    from mlflowkit.hashing.device import _blake3

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    sms = int(props["multiProcessorCount"])
    threads = 256
    blocks = sms * blocks_per_sm
    n = blocks * threads
    compressions = n * iters
    probe = (0, n // 3, n - 1)
    want = {t: _reference(t, iters) for t in probe}

    c_kernel = cupy.RawKernel(cuda_c_source(), "ceiling_c")
    out_c = cupy.zeros(8 * n, dtype=cupy.uint32)

    def run_c() -> None:
        c_kernel((blocks,), (threads,), (out_c, cupy.int32(iters)))

    numba_kernel = _numba_kernel()
    out_numba = cuda.device_array(8 * n, dtype="uint32")

    def run_numba() -> None:
        _blake3._launch(numba_kernel, blocks, threads, out_numba, iters)

    def events(fn: Any) -> float:
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(cupy.cuda.get_elapsed_time(start, end)) / 1000.0

    for name, fn, host in (
        ("cuda-c", run_c, lambda: cupy.asnumpy(out_c)),
        ("numba (mlflowkit's compress)", run_numba, out_numba.copy_to_host),
    ):
        fn()  # compile and warm up
        cuda.synchronize()
        got = host()
        same = all([int(w) for w in got[8 * t : 8 * t + 8]] == want[t] for t in probe)
        seconds = statistics.median(events(fn) for _ in range(repeats))
        rate = compressions * 64 / seconds / 1e9
        report.add(
            "ceiling",
            kernel=name,
            compressions=compressions,
            seconds=seconds,
            compress_GB_per_s=rate,
            hashing_ceiling_GB_per_s=rate / (1 + 1 / 16),
            same_as_cpu=same,
        )
