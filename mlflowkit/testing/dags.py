"""Small pipelines the executor contract suite runs (a real module, importable by workers).

Every step is a module-level function, so worker processes and Dask workers import it by
reference; the suite also defines a few steps inside its tests to check shipping by value.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk

__all__ = [
    "context",
    "diamond",
    "failing",
    "fan",
    "retrying",
    "sleeping",
]


@mk.step
def pair(n: int) -> tuple[int, int]:
    """Two numbers derived from ``n`` (unpacked by the pipelines)."""
    return n, 2 * n


@mk.step
def double(x: int) -> int:
    """Twice ``x``."""
    return 2 * x


@mk.step
def add(a: int, b: int) -> int:
    """``a + b``."""
    return a + b


@mk.step
def numbers(n: int) -> list[int]:
    """``[0, 1, ..., n - 1]``."""
    return list(range(n))


@mk.step
def total(xs: list[int]) -> int:
    """The sum of ``xs``."""
    return sum(xs)


@mk.step
def matrix(n: int) -> NDArray[np.float64]:
    """An ``n x n`` array drawn from the step's own random stream (``mk.rng()``)."""
    return mk.rng().normal(size=(n, n))


@mk.step
def trace(a: NDArray[np.float64]) -> float:
    """The trace of ``a``."""
    return float(np.trace(a))


@mk.pipeline
def diamond(n: int = 4) -> Any:
    """A diamond with a tuple unpacked into two branches, plus an array branch."""
    a, b = pair(n)
    left = double(a)
    right = add(b, 1)
    return {"sum": add(left, right), "trace": trace(matrix(n)), "left": left}


@mk.pipeline
def fan(n: int = 6) -> Any:
    """A fan-out over a list only known at run time, then a reduction."""
    xs = numbers(n)
    return total(double.map(x=xs))


@mk.step
def explode(x: int) -> int:
    """Always fails."""
    raise ValueError(f"boom: cannot handle {x}")


@mk.pipeline
def failing(n: int = 3) -> Any:
    """A pipeline whose second step fails."""
    return explode(double(n))


@mk.step(retries=2)
def flaky(x: int) -> int:
    """Fails on its first two attempts, then returns ``x``."""
    if mk.current().attempt < 3:
        raise RuntimeError(f"flaky attempt {mk.current().attempt}")
    return x


@mk.pipeline
def retrying(x: int = 5) -> Any:
    """One flaky step with ``retries=2``."""
    return flaky(x)


@mk.step(timeout=0.5)
def sleep_for(seconds: float) -> float:
    """Sleeps; its ``timeout`` hint is half a second."""
    time.sleep(seconds)
    return seconds


@mk.pipeline
def sleeping(seconds: float = 4.0) -> Any:
    """One step that sleeps past its timeout."""
    return sleep_for(seconds)


@mk.step
def whoami(x: int) -> dict[str, str]:
    """What ``mk.current()`` says inside a running step."""
    ctx = mk.current()
    return {"name": ctx.name, "run_id": ctx.run_id, "key": ctx.key}


@mk.pipeline
def context(x: int = 1) -> Any:
    """One step reporting its own context."""
    return whoami(x)


def identity(x: int) -> int:
    """A plain function the suite turns into steps with chosen resources."""
    return x
