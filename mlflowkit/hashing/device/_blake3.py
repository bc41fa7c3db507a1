"""BLAKE3 kernels for a CUDA device, written with Numba so that they also run in its simulator.

This module imports ``numba.cuda`` at import time and is therefore imported lazily, only when a
digest is first computed (see :mod:`mlflowkit.gpu`). The module-level name ``cuda`` must stay a
global of this module: Numba's CUDA simulator swaps that global for its per-thread fake while a
simulated kernel runs.

The tree
--------
One kernel (:func:`make_kernels` ``chunk``) compresses the 1024-byte chunks: each thread owns one
chunk and runs its 16 block compressions (chunk counter = chunk index, ``CHUNK_START`` on the
first block, ``CHUNK_END`` on the last, the last partial block zero-padded with its real length
as ``block_len``; an empty input is one empty chunk). The threads of a thread block first stage
each 64-byte message block of their chunks in shared memory with coalesced 32-bit loads. The
block then merges its chunk chaining values in shared memory, level by level: pairs are merged
left to right and an odd leftover is carried up unchanged. A second kernel (``merge``) repeats
that reduction over the per-block results, one launch per ``merge_threads``-fold reduction,
until one chaining value is left. Carrying the odd leftover reproduces BLAKE3's left-complete
tree because every thread block covers an aligned, power-of-two run of nodes. The ROOT flag goes
on the final parent compression, or on the last block of the only chunk.

Invariants
----------
* Every digest equals the reference BLAKE3 of the same bytes (checked in the tests against the
  official test-vector lengths and random lengths around chunk boundaries).
* All word arithmetic is 32-bit: sums are formed in ``uint64`` and masked back to 32 bits, and
  rotations are ``(x >> n) | (x << (32 - n))`` on a ``uint64`` copy, masked. This never overflows
  in the simulator (where values are NumPy scalars, and overflow would warn) and compiles to
  plain 32-bit adds and funnel shifts on the device.
* The compression function is built by :func:`make_compress` from a ``jit`` decorator, so that
  the very same source is compiled for the device, run in the simulator, and compiled for the
  CPU with ``numba.njit`` by the tests (which checks Numba's integer typing on the CPU).
* Kernels are compiled on first use and cached per thread-block configuration; the small
  buffers of chaining values are allocated once per thread, device and size class.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import config as _numba_config
from numba import cuda as _numba_cuda

# The simulator finds this global by identity (``is numba.cuda``) and swaps it while a kernel
# runs. Both are annotated as ``Any`` because Numba's API is untyped.
cuda: Any = _numba_cuda
numba_config: Any = _numba_config

__all__ = [
    "CHUNK_END",
    "CHUNK_LEN",
    "CHUNK_START",
    "DEFAULT_CONFIG",
    "IV",
    "PARENT",
    "ROOT",
    "KernelConfig",
    "digest_device",
    "gather",
    "launch_digest",
    "make_compress",
    "make_kernels",
]

#: Bytes per chunk and per message block.
CHUNK_LEN = 1024
BLOCK_LEN = 64

#: Domain flags of the BLAKE3 specification.
CHUNK_START = 1
CHUNK_END = 2
PARENT = 4
ROOT = 8

#: The BLAKE3 initialisation vector (the first eight SHA-256 IV words).
IV = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)


@dataclass(frozen=True)
class KernelConfig:
    """Thread-block shapes of the kernels (each a compile-time constant of its kernels).

    Attributes
    ----------
    chunk_threads:
        Threads per block of the chunk kernel, one chunk each; a power of two >= 2.
    merge_threads:
        Threads per block of the merge kernel; each block merges that many chaining values
        into one. A power of two >= 2.
    stage_blocks:
        Message blocks per chunk staged in shared memory between two barriers: 1, 2, 4, 8 or
        16. The chunk kernel uses ``chunk_threads * (16 * stage_blocks + 1 + 9) * 4`` bytes of
        shared memory. (Loading each thread's own chunk straight from global memory, with no
        staging, was measured 7% slower on an H200.)

    The defaults suit current GPUs. The tests also use small blocks that stage whole chunks:
    the simulator then spends far less time in barriers, and inputs of a few chunks already
    exercise every level of the reduction.
    """

    chunk_threads: int = 128
    merge_threads: int = 256
    stage_blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("chunk_threads", "merge_threads"):
            n = getattr(self, name)
            if n < 2 or n & (n - 1):
                raise ValueError(f"{name} must be a power of two >= 2, got {n}")
        if self.stage_blocks not in (1, 2, 4, 8, 16):
            raise ValueError(f"stage_blocks must be 1, 2, 4, 8 or 16, got {self.stage_blocks}")


DEFAULT_CONFIG = KernelConfig()

# Module-level typed constants: Numba freezes them with their NumPy type (uint64 / uint32),
# so the device code never mixes signed and unsigned 64-bit integers.
_M32 = np.uint64(0xFFFFFFFF)
_IV0 = np.uint32(IV[0])
_IV1 = np.uint32(IV[1])
_IV2 = np.uint32(IV[2])
_IV3 = np.uint32(IV[3])
_IV4 = np.uint32(IV[4])
_IV5 = np.uint32(IV[5])
_IV6 = np.uint32(IV[6])
_IV7 = np.uint32(IV[7])

#: 32-bit words per chunk.
_CHUNK_WORDS = CHUNK_LEN // 4

# Shared-memory row stride of a chaining value in 32-bit words: 8, plus 1 against bank
# conflicts.
_CV_ROW = 9


def make_compress(jit: Callable[[Any], Any]) -> Any:
    """Build the BLAKE3 compression function with the given Numba ``jit`` decorator.

    Parameters
    ----------
    jit:
        ``numba.cuda.jit(device=True)`` for the device (or the simulator), ``numba.njit`` for
        the CPU.

    Returns
    -------
    compress(cv, m, counter, block_len, flags) -> tuple of 8 uint32
        ``cv`` is a tuple of 8 ``uint32``, ``m`` a tuple of 16 ``uint32`` message words,
        ``counter`` a non-negative integer below 2**64, ``block_len`` and ``flags`` small
        non-negative integers. Returns the new chaining value (the first 8 output words).
    """

    @jit
    def g(a: Any, b: Any, c: Any, d: Any, mx: Any, my: Any) -> Any:
        a = np.uint32((np.uint64(a) + np.uint64(b) + np.uint64(mx)) & _M32)
        x = np.uint64(d ^ a)
        d = np.uint32(((x >> 16) | (x << 16)) & _M32)
        c = np.uint32((np.uint64(c) + np.uint64(d)) & _M32)
        x = np.uint64(b ^ c)
        b = np.uint32(((x >> 12) | (x << 20)) & _M32)
        a = np.uint32((np.uint64(a) + np.uint64(b) + np.uint64(my)) & _M32)
        x = np.uint64(d ^ a)
        d = np.uint32(((x >> 8) | (x << 24)) & _M32)
        c = np.uint32((np.uint64(c) + np.uint64(d)) & _M32)
        x = np.uint64(b ^ c)
        b = np.uint32(((x >> 7) | (x << 25)) & _M32)
        return a, b, c, d

    @jit
    def round_(v: Any, m: Any) -> Any:
        # Columns, then diagonals.
        v0, v4, v8, v12 = g(v[0], v[4], v[8], v[12], m[0], m[1])
        v1, v5, v9, v13 = g(v[1], v[5], v[9], v[13], m[2], m[3])
        v2, v6, v10, v14 = g(v[2], v[6], v[10], v[14], m[4], m[5])
        v3, v7, v11, v15 = g(v[3], v[7], v[11], v[15], m[6], m[7])
        v0, v5, v10, v15 = g(v0, v5, v10, v15, m[8], m[9])
        v1, v6, v11, v12 = g(v1, v6, v11, v12, m[10], m[11])
        v2, v7, v8, v13 = g(v2, v7, v8, v13, m[12], m[13])
        v3, v4, v9, v14 = g(v3, v4, v9, v14, m[14], m[15])
        return (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15)

    @jit
    def permute(m: Any) -> Any:
        # The BLAKE3 message permutation, applied between rounds.
        return (
            m[2],
            m[6],
            m[3],
            m[10],
            m[7],
            m[0],
            m[4],
            m[13],
            m[1],
            m[11],
            m[12],
            m[5],
            m[9],
            m[14],
            m[15],
            m[8],
        )

    @jit
    def compress(cv: Any, m: Any, counter: Any, block_len: Any, flags: Any) -> Any:
        v = (
            cv[0],
            cv[1],
            cv[2],
            cv[3],
            cv[4],
            cv[5],
            cv[6],
            cv[7],
            _IV0,
            _IV1,
            _IV2,
            _IV3,
            np.uint32(counter & 0xFFFFFFFF),
            np.uint32((counter >> 32) & 0xFFFFFFFF),
            np.uint32(block_len),
            np.uint32(flags),
        )
        v = round_(v, m)
        m = permute(m)
        v = round_(v, m)
        m = permute(m)
        v = round_(v, m)
        m = permute(m)
        v = round_(v, m)
        m = permute(m)
        v = round_(v, m)
        m = permute(m)
        v = round_(v, m)
        m = permute(m)
        v = round_(v, m)
        return (
            np.uint32(v[0] ^ v[8]),
            np.uint32(v[1] ^ v[9]),
            np.uint32(v[2] ^ v[10]),
            np.uint32(v[3] ^ v[11]),
            np.uint32(v[4] ^ v[12]),
            np.uint32(v[5] ^ v[13]),
            np.uint32(v[6] ^ v[14]),
            np.uint32(v[7] ^ v[15]),
        )

    return compress


@functools.cache
def make_kernels(config: KernelConfig) -> tuple[Any, Any]:
    """Build (once per configuration) the chunk and merge kernels.

    Parameters
    ----------
    config:
        The thread-block shapes.

    Returns
    -------
    (chunk, merge)
        ``chunk[groups, config.chunk_threads](words, data8, nbytes, nchunks, root, out)``
        writes one chaining value per group of ``chunk_threads`` chunks to ``out`` (8 words
        each); ``merge[groups, config.merge_threads](cvs, count, root, out)`` merges groups of
        ``merge_threads`` chaining values likewise. ``root`` is ``ROOT`` when the launch has a
        single block (its result is the digest), else 0.
    """
    chunk_threads = config.chunk_threads
    merge_threads = config.merge_threads
    stage_blocks = config.stage_blocks
    device = _device_jit()
    kernel: Callable[[Callable[..., None]], Any] = cuda.jit
    compress = make_compress(device)
    nstages = 16 // stage_blocks
    stage_words = stage_blocks * 16
    tile_row = stage_words + 1  # odd: a thread's row starts in its own bank
    tile_words = chunk_threads * tile_row
    chunk_cv_words = chunk_threads * _CV_ROW
    # One pass of the block's threads over a stage's tile covers ``rows_per_pass`` whole rows
    # (more threads than words in a row) or a ``1 / passes_per_row`` part of one row.
    rows_per_pass = max(1, chunk_threads // stage_words)
    passes_per_row = max(1, stage_words // chunk_threads)
    merge_cv_words = merge_threads * _CV_ROW

    @device
    def load_word(words: Any, data8: Any, nwords: Any, nbytes: Any, gw: Any) -> Any:
        # Message word ``gw`` of the input, little-endian; zero past the end. The last,
        # partial word is assembled from bytes so that the input length need not be a
        # multiple of four.
        if gw < nwords:
            return words[gw]
        value = np.uint32(0)
        if gw == nwords:
            start = nwords * 4
            for i in range(nbytes - start):
                value = np.uint32((np.uint32(data8[start + i]) << (8 * i)) | value)
        return value

    @device
    def merge_group(cvs: Any, t: Any, count: Any, root: Any) -> None:
        # Reduce the ``count`` chaining values in shared memory (rows of _CV_ROW words) to
        # the one in row 0: pairs left to right, an odd leftover carried up unchanged.
        # ``count`` is the same for every thread of the block, so the loop (and the barriers
        # in it) is uniform.
        cuda.syncthreads()
        while count > 1:
            pairs = count // 2
            half = count - pairs
            r = (_IV0, _IV1, _IV2, _IV3, _IV4, _IV5, _IV6, _IV7)
            left = 2 * t * _CV_ROW
            if t < pairs:
                right = left + _CV_ROW
                m = (
                    cvs[left],
                    cvs[left + 1],
                    cvs[left + 2],
                    cvs[left + 3],
                    cvs[left + 4],
                    cvs[left + 5],
                    cvs[left + 6],
                    cvs[left + 7],
                    cvs[right],
                    cvs[right + 1],
                    cvs[right + 2],
                    cvs[right + 3],
                    cvs[right + 4],
                    cvs[right + 5],
                    cvs[right + 6],
                    cvs[right + 7],
                )
                flags = PARENT
                if count == 2:
                    flags = PARENT | root
                r = compress(r, m, 0, BLOCK_LEN, flags)
            elif t < half:
                r = (
                    cvs[left],
                    cvs[left + 1],
                    cvs[left + 2],
                    cvs[left + 3],
                    cvs[left + 4],
                    cvs[left + 5],
                    cvs[left + 6],
                    cvs[left + 7],
                )
            cuda.syncthreads()
            if t < half:
                o = t * _CV_ROW
                cvs[o] = r[0]
                cvs[o + 1] = r[1]
                cvs[o + 2] = r[2]
                cvs[o + 3] = r[3]
                cvs[o + 4] = r[4]
                cvs[o + 5] = r[5]
                cvs[o + 6] = r[6]
                cvs[o + 7] = r[7]
            cuda.syncthreads()
            count = half

    @device
    def block_flags(b: Any, nblocks: Any, last_len: Any, nchunks: Any, root: Any) -> Any:
        # Flags and length of message block ``b`` of a chunk of ``nblocks`` blocks.
        flags = 0
        block_len = BLOCK_LEN
        if b == 0:
            flags = CHUNK_START
        if b == nblocks - 1:
            flags = flags | CHUNK_END
            block_len = last_len
            if nchunks == 1:
                flags = flags | root
        return flags, block_len

    @device
    def store_root_row(cvs: Any, out: Any, slot: Any) -> None:
        o = slot * 8
        out[o] = cvs[0]
        out[o + 1] = cvs[1]
        out[o + 2] = cvs[2]
        out[o + 3] = cvs[3]
        out[o + 4] = cvs[4]
        out[o + 5] = cvs[5]
        out[o + 6] = cvs[6]
        out[o + 7] = cvs[7]

    @kernel
    def chunk_kernel(
        words: Any, data8: Any, nbytes: Any, nchunks: Any, root: Any, out: Any
    ) -> None:
        tile = cuda.shared.array(tile_words, np.uint32)
        cvs = cuda.shared.array(chunk_cv_words, np.uint32)
        t = cuda.threadIdx.x
        group = cuda.blockIdx.x
        first = group * chunk_threads
        chunk = first + t
        nwords = nbytes // 4

        # This thread's chunk: how many blocks, and the length of the last one.
        nblocks = 0
        last_len = BLOCK_LEN
        if chunk < nchunks:
            remaining = nbytes - chunk * CHUNK_LEN
            if remaining >= CHUNK_LEN:
                nblocks = 16
            else:
                nblocks = (remaining + BLOCK_LEN - 1) // BLOCK_LEN
                if nblocks == 0:
                    nblocks = 1  # the empty input is one empty block
                last_len = remaining - (nblocks - 1) * BLOCK_LEN

        cv = (_IV0, _IV1, _IV2, _IV3, _IV4, _IV5, _IV6, _IV7)
        # Staging: load ``k`` of thread ``t`` is word ``k * chunk_threads + t`` of the stage's
        # tile (rows of ``stage_words`` words, one row per chunk), so consecutive threads read
        # consecutive words of a chunk (coalesced). Its row and column split into a part fixed
        # per thread (``row0``, ``col0``) and a part fixed per ``k`` (compile-time constants
        # once the loop is unrolled): no division per load.
        if chunk_threads >= stage_words:
            row0 = t // stage_words
            col0 = t - row0 * stage_words
        else:
            row0 = 0
            col0 = t
        word0 = first * _CHUNK_WORDS + row0 * _CHUNK_WORDS + col0
        cell0 = row0 * tile_row + col0
        # Every word this block stages is a whole word of the input: no bounds checks (the
        # same for every thread of the block, so the branch below never diverges).
        whole = (first + chunk_threads) * CHUNK_LEN <= nbytes
        # Indices go through ``np.uint64`` on the hot path: Numba wraps negative (signed)
        # indices around, a compare and a select per access, which unsigned ones skip.
        for stage in range(nstages):
            # Stage ``stage_blocks`` message blocks of every chunk of this thread block in
            # shared memory: chunk_threads chunks x stage_words words over chunk_threads
            # threads is stage_words loads each.
            cuda.syncthreads()
            gw0 = word0 + stage * stage_words
            for k in range(stage_words):
                row = (k // passes_per_row) * rows_per_pass
                col = (k - (k // passes_per_row) * passes_per_row) * chunk_threads
                gw = gw0 + row * _CHUNK_WORDS + col
                cell = cell0 + row * tile_row + col
                if whole:
                    tile[np.uint64(cell)] = words[np.uint64(gw)]
                else:
                    tile[np.uint64(cell)] = load_word(words, data8, nwords, nbytes, gw)
            cuda.syncthreads()
            for sb in range(stage_blocks):
                b = stage * stage_blocks + sb
                if b < nblocks:
                    o = t * tile_row + sb * 16
                    m = (
                        tile[np.uint64(o)],
                        tile[np.uint64(o + 1)],
                        tile[np.uint64(o + 2)],
                        tile[np.uint64(o + 3)],
                        tile[np.uint64(o + 4)],
                        tile[np.uint64(o + 5)],
                        tile[np.uint64(o + 6)],
                        tile[np.uint64(o + 7)],
                        tile[np.uint64(o + 8)],
                        tile[np.uint64(o + 9)],
                        tile[np.uint64(o + 10)],
                        tile[np.uint64(o + 11)],
                        tile[np.uint64(o + 12)],
                        tile[np.uint64(o + 13)],
                        tile[np.uint64(o + 14)],
                        tile[np.uint64(o + 15)],
                    )
                    flags, block_len = block_flags(b, nblocks, last_len, nchunks, root)
                    cv = compress(cv, m, chunk, block_len, flags)

        if chunk < nchunks:
            o = t * _CV_ROW
            cvs[o] = cv[0]
            cvs[o + 1] = cv[1]
            cvs[o + 2] = cv[2]
            cvs[o + 3] = cv[3]
            cvs[o + 4] = cv[4]
            cvs[o + 5] = cv[5]
            cvs[o + 6] = cv[6]
            cvs[o + 7] = cv[7]
        count = nchunks - first
        if count > chunk_threads:  # noqa: PLR1730 (builtin min() does not compile for CUDA here)
            count = chunk_threads
        merge_group(cvs, t, count, root)
        if t == 0:
            store_root_row(cvs, out, group)

    @kernel
    def merge_kernel(cvs_in: Any, n_in: Any, root: Any, out: Any) -> None:
        cvs = cuda.shared.array(merge_cv_words, np.uint32)
        t = cuda.threadIdx.x
        group = cuda.blockIdx.x
        first = group * merge_threads
        i = first + t
        if i < n_in:
            o = t * _CV_ROW
            s = i * 8
            cvs[o] = cvs_in[s]
            cvs[o + 1] = cvs_in[s + 1]
            cvs[o + 2] = cvs_in[s + 2]
            cvs[o + 3] = cvs_in[s + 3]
            cvs[o + 4] = cvs_in[s + 4]
            cvs[o + 5] = cvs_in[s + 5]
            cvs[o + 6] = cvs_in[s + 6]
            cvs[o + 7] = cvs_in[s + 7]
        count = n_in - first
        if count > merge_threads:  # noqa: PLR1730 (builtin min() does not compile for CUDA here)
            count = merge_threads
        merge_group(cvs, t, count, root)
        if t == 0:
            store_root_row(cvs, out, group)

    return chunk_kernel, merge_kernel


@functools.cache
def _gather_kernel() -> Any:
    """The kernel behind :func:`gather` (built once)."""
    kernel: Callable[[Callable[..., None]], Any] = cuda.jit

    @kernel
    def gather_kernel(
        src: Any, base: Any, shape: Any, strides: Any, itemsize: Any, nelem: Any, out: Any
    ) -> None:
        # Copy element ``i`` (C order) of a strided array, given as bytes, to ``out``.
        i = cuda.grid(1)
        if i < nelem:
            offset = base
            rest = i
            for k in range(shape.size - 1, -1, -1):
                n = shape[k]
                q = rest // n
                offset += (rest - q * n) * strides[k]
                rest = q
            o = i * itemsize
            for j in range(itemsize):
                out[o + j] = src[offset + j]

    return gather_kernel


def _device_jit() -> Callable[[Any], Any]:
    """The decorator for device functions: ``cuda.jit(device=True)``, or none in the simulator.

    The simulator wraps a device function in an object whose every call re-binds the module
    global ``cuda``; while a simulated kernel runs that global is already bound for the whole
    module, so plain Python functions behave the same and run about twice as fast.
    """
    if numba_config.ENABLE_CUDASIM:
        return lambda fn: fn
    jit: Callable[[Any], Any] = cuda.jit(device=True)
    return jit


# Numba's low-occupancy hint, after the terminal colour codes it starts with.
_SMALL_GRID = r"\W*(\[\d+m)?Grid size \d+ will likely result in GPU under-utilization"


def _launch(kernel: Any, blocks: int, threads: int, *args: Any) -> None:
    """Launch ``kernel`` on the default stream, through Numba's public launch syntax.

    Numba warns about small grids (``NumbaPerformanceWarning``) on every launch that has fewer
    blocks than twice the device's multiprocessors, which is every hash of less than about
    16 MiB here; the warning is a beginner's hint, not a fault, so it is silenced for this launch
    only. It is matched by its text: numba and numba-cuda each have their own warning class.
    (An earlier version called the dispatcher's private ``call`` to skip the check; its
    signature changed in numba-cuda 0.30 and every launch failed on a real device.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SMALL_GRID)
        kernel[blocks, threads](*args)


def gather(
    src: Any, base: int, shape: Any, strides: Any, itemsize: int, nelem: int, out: Any
) -> None:
    """Copy a strided array's elements, in C order, into the contiguous byte array ``out``.

    Parameters
    ----------
    src:
        1-D ``uint8`` device array spanning every byte of the strided array.
    base:
        Byte offset in ``src`` of the element at index ``(0, ..., 0)``.
    shape, strides:
        1-D ``int64`` device arrays: the array's shape and its strides in bytes (any sign).
    itemsize, nelem:
        Bytes per element and number of elements (at least 1).
    out:
        1-D ``uint8`` device array of ``nelem * itemsize`` bytes.
    """
    threads = 128
    _launch(
        _gather_kernel(),
        (nelem + threads - 1) // threads,
        threads,
        src,
        base,
        shape,
        strides,
        itemsize,
        nelem,
        out,
    )


_SCRATCH = threading.local()


def _scratch(words: int) -> tuple[Any, Any]:
    """Two ``uint32`` device buffers of at least ``words`` words, reused by this thread.

    All kernels run on the default stream, and a thread reads each digest before it hashes
    again, so a thread's next hash never overwrites chaining values still being read. Reusing
    the buffers keeps allocation (and Numba's deferred, synchronising frees) out of every hash.
    """
    size = 1 << max(6, (words - 1).bit_length())
    device = 0 if numba_config.ENABLE_CUDASIM else cuda.current_context().device.id
    buffers: dict[tuple[int, int], tuple[Any, Any]] | None = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    pair = buffers.get((device, size))
    if pair is None:
        pair = (cuda.device_array(size, dtype=np.uint32), cuda.device_array(size, dtype=np.uint32))
        buffers[(device, size)] = pair
    return pair


def launch_digest(
    words: Any,
    data8: Any,
    nbytes: int,
    config: KernelConfig = DEFAULT_CONFIG,
) -> Any:
    """Launch the kernels that hash ``nbytes`` bytes held on the device; do not wait.

    Parameters
    ----------
    words:
        1-D ``uint32`` device array whose first ``nbytes // 4`` words are the input's bytes
        (little-endian); at least one element.
    data8:
        1-D ``uint8`` device array of the same bytes (only the last ``nbytes % 4`` are read);
        at least one element.
    nbytes:
        Length of the input in bytes (0 is allowed).
    config:
        The kernels' thread-block shapes.

    Returns
    -------
    device array
        ``uint32`` device array whose first 8 words will hold the digest (little-endian) once
        the kernels, queued on the default stream, have run. It is scratch memory of the
        calling thread: read it before this thread hashes again.
    """
    chunk, merge = make_kernels(config)
    chunk_threads = config.chunk_threads
    merge_threads = config.merge_threads
    nchunks = max(1, -(-nbytes // CHUNK_LEN))
    groups = -(-nchunks // chunk_threads)
    cvs, spare = _scratch(groups * 8)
    root = ROOT if groups == 1 else 0
    _launch(chunk, groups, chunk_threads, words, data8, nbytes, nchunks, root, cvs)
    if groups > 1:
        count = groups
        while count > 1:
            blocks = -(-count // merge_threads)
            root = ROOT if blocks == 1 else 0
            _launch(merge, blocks, merge_threads, cvs, count, root, spare)
            cvs, spare = spare, cvs
            count = blocks
    return cvs


def digest_device(
    words: Any,
    data8: Any,
    nbytes: int,
    config: KernelConfig = DEFAULT_CONFIG,
) -> bytes:
    """BLAKE3 digest of ``nbytes`` bytes held on the device (see :func:`launch_digest`).

    Returns
    -------
    bytes
        The 32-byte digest. Reading it back is the only synchronisation with the host.
    """
    out = launch_digest(words, data8, nbytes, config)
    host = out[:8].copy_to_host()
    return bytes(np.asarray(host, dtype="<u4").tobytes())
