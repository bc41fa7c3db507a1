"""Workload E: hash throughput on a 1 GiB float64 array, in GB/s (10^9 bytes per second).

All hashers run in one process over the same buffer, next to two yardsticks of the machine's
memory bandwidth measured in that process: ``numpy.sum`` over the buffer (a read) and
``numpy.copyto`` into a second buffer (a read and a write; bytes counted once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.core import MIB, Bench, Case, Config, Group, Metric

__all__ = ["groups"]

#: one buffer per size, shared by every hasher in the process
_BUFFERS: dict[int, Any] = {}


def _buffer(nbytes: int) -> Any:
    import numpy as np

    if nbytes not in _BUFFERS:
        _BUFFERS[nbytes] = np.random.default_rng(0).random(nbytes // 8)
    return _BUFFERS[nbytes]


def _hasher(algo: str, X: Any) -> Callable[[], Any]:
    """A no-argument function hashing (or reading) ``X`` with ``algo``."""
    if algo == "mlflowkit":
        import mlflowkit as mk

        return lambda: mk.hash_value(X)
    if algo == "xxh3":
        import xxhash

        return lambda: xxhash.xxh3_64_digest(X)
    if algo in ("blake3", "blake3-mt"):
        import blake3

        threads = blake3.blake3.AUTO if algo == "blake3-mt" else 1
        data = memoryview(X).cast("B")  # blake3 takes byte buffers only
        return lambda: blake3.blake3(data, max_threads=threads).digest()
    if algo == "sha256":
        import hashlib

        return lambda: hashlib.sha256(X).digest()
    if algo == "joblib":
        import joblib

        return lambda: joblib.hash(X)
    if algo == "dask":
        from dask.base import tokenize

        return lambda: tokenize(X)
    if algo == "numpy-sum":
        return X.sum
    if algo == "numpy-copy":
        import numpy as np

        out = np.empty_like(X)
        out.fill(0.0)  # touch every page now, not in the first measurement
        return lambda: np.copyto(out, X)
    raise ValueError(f"unknown hash algorithm {algo!r}")


class HashBench(Bench):
    """Hash (or read) the shared buffer of ``nbytes`` once per measurement."""

    def __init__(self, cfg: Config, algo: str, nbytes: int) -> None:
        super().__init__(cfg)
        self.fn = _hasher(algo, _buffer(nbytes))

    def once(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.fn()
        return {"s": time.perf_counter() - t0}

    def close(self) -> None:
        self.fn = lambda: None  # drops numpy-copy's output buffer
        _BUFFERS.clear()


def groups(cfg: Config) -> list[Group]:
    """The hash throughput comparison."""
    nbytes = cfg.hash_bytes
    size = f"{nbytes / (1 << 30):g} GiB" if nbytes >= 1 << 30 else f"{nbytes // MIB} MiB"
    factory = "benchmarks.workloads.hashing:HashBench"

    def case(tool: str, family: str, algo: str, kind: str = "peer", **extra: Any) -> Case:
        return Case(tool, family, factory, {"algo": algo, "nbytes": nbytes}, kind=kind, **extra)

    return [
        Group(
            "E",
            "hashing",
            f"{size} float64 ndarray",
            nbytes,
            (Metric("s", "hash/throughput", "", "GB/s", scale=nbytes / 1e9, rate=True),),
            (
                case("mlflowkit (hash_value)", "mlflowkit", "mlflowkit", kind="mlflowkit"),
                case("xxhash (xxh3_64)", "xxhash", "xxh3", requires=("xxhash",), install="xxhash"),
                case("blake3 (1 thread)", "blake3", "blake3", requires=("blake3",)),
                case("blake3 (all threads)", "blake3", "blake3-mt", requires=("blake3",)),
                case("hashlib.sha256", "hashlib", "sha256"),
                case("joblib.hash (md5)", "joblib", "joblib", requires=("joblib",)),
                case("dask.base.tokenize", "dask", "dask", requires=("dask",)),
                case("memory: numpy sum (read)", "numpy", "numpy-sum", kind="reference"),
                case("memory: numpy copyto", "numpy", "numpy-copy", kind="reference"),
            ),
            shared=True,
        )
    ]
