"""Pipelines for run-semantics tests: counters live in files so every process sees them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import mlflowkit as mk

COUNTER_DIR = Path(os.environ.get("MLFLOWKIT_TEST_COUNTERS", "/nonexistent"))


def bump(name: str) -> None:
    """Count an execution of ``name`` in a file (works across processes)."""
    if COUNTER_DIR.is_dir():
        with open(COUNTER_DIR / name, "a") as f:
            f.write("x")


def count(directory: Path, name: str) -> int:
    path = directory / name
    return len(path.read_text()) if path.exists() else 0


@mk.step
def source(n: int) -> list[int]:
    bump("source")
    return list(range(n))


@mk.step
def parity(xs: list[int]) -> int:
    """Depends only on the parity of the sum: early cutoff shows when inputs change."""
    bump("parity")
    return sum(xs) % 2


@mk.step
def downstream(p: int) -> str:
    bump("downstream")
    return f"parity={p}"


@mk.pipeline
def cutoff(n: int = 4) -> Any:
    return downstream(parity(source(n)))


@mk.step
def noisy(n: int) -> list[float]:
    bump("noisy")
    return [float(x) for x in mk.rng().normal(size=n)]


@mk.step
def whoami() -> dict[str, str]:
    ctx = mk.current()
    return {"name": ctx.name, "run_id": ctx.run_id, "key": ctx.key}


@mk.pipeline
def context() -> Any:
    return noisy(3), whoami()


@mk.step(cache=False)
def side_effect(x: int) -> int:
    bump("side_effect")
    return x


@mk.pipeline
def uncached(x: int = 1) -> Any:
    return side_effect(x)


@mk.step
def boom(x: int) -> int:
    bump("boom")
    raise ValueError(f"boom {x}")


@mk.step
def ok(x: int) -> int:
    bump("ok")
    return x


@mk.pipeline
def failing(x: int = 1) -> Any:
    a = ok(x)
    return boom(a)


@mk.step(retries=2, retry_delay=0.01)
def flaky(marker: str) -> str:
    """Fails until it has been attempted three times (counted in a file)."""
    bump(marker)
    if count(COUNTER_DIR, marker) < 3:
        raise RuntimeError("not yet")
    return "done"


@mk.pipeline
def retrying(marker: str = "flaky") -> Any:
    return flaky(marker)


@mk.step
def big(n: int) -> np.ndarray:
    bump("big")
    return np.arange(n, dtype=np.float64)


@mk.step
def total(a: np.ndarray) -> float:
    bump("total")
    return float(a.sum())


@mk.pipeline
def arrays(n: int = 1000) -> Any:
    return total(big(n))
