"""mlflowkit's side of the workloads: steps with trivial bodies and the pipelines over them.

A module of its own (importable by name) so that process pools and Dask workers load the steps,
and so that a fresh process computes the same code digests and finds the cache.
"""

from __future__ import annotations

import numpy as np

import mlflowkit as mk


@mk.step(cache=False)
def inc_volatile(x: int) -> int:
    """A chain step that is never cached (orchestration only)."""
    return x + 1


@mk.step
def inc(x: int) -> int:
    """A chain step whose output is stored and cached."""
    return x + 1


@mk.step(cache=False)
def square(i: int) -> int:
    """A fan-out task that is never cached (scheduling only, nothing stored)."""
    return i * i


@mk.step(cache=False)
def add_all(values: list[int]) -> int:
    """The reduce after the uncached fan-out."""
    return sum(values)


@mk.step
def square_persisted(i: int) -> int:
    """A fan-out task with the defaults: its output is stored and cached."""
    return i * i


@mk.step
def add_all_persisted(values: list[int]) -> int:
    """The reduce after the persisted fan-out, with the defaults."""
    return sum(values)


@mk.step
def first_element(X: np.ndarray) -> float:
    """A cheap step over a big array input: the work is in the cache lookup."""
    return float(X.flat[0])


@mk.pipeline
def chain_volatile(n: int, start: int = 0) -> int:
    """``n`` uncached steps in a row."""
    x = start
    for _ in range(n):
        x = inc_volatile(x)
    return x


@mk.pipeline
def chain(n: int, start: int = 0) -> int:
    """``n`` cached steps in a row."""
    x = start
    for _ in range(n):
        x = inc(x)
    return x


@mk.pipeline
def fan(n: int) -> int:
    """``n`` independent uncached tasks and one reduce."""
    return add_all(square.map(i=list(range(n))))


@mk.pipeline
def fan_persisted(n: int, start: int = 0) -> int:
    """``n`` independent cached tasks over ``start, ..., start + n - 1`` and one reduce."""
    return add_all_persisted(square_persisted.map(i=list(range(start, start + n))))


@mk.pipeline
def big_input(X: np.ndarray) -> float:
    """One cached step taking a big array."""
    return first_element(X)
