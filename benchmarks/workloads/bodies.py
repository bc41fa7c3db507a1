"""The trivial step bodies every tool runs, as plain importable functions.

Peers wrap these (``dask.delayed(inc)``, ``prefect.task(inc)``, ``joblib.Memory.cache(inc)``);
mlflowkit's steps in ``mk_pipelines`` have the same bodies. They live in a module of their own
so that process pools and cluster workers import them by name.
"""

from __future__ import annotations

from typing import Any


def inc(x: int) -> int:
    """One step of a chain."""
    return x + 1


def square(i: int) -> int:
    """One task of a fan-out."""
    return i * i


def add_all(values: list[int]) -> int:
    """The reduce after a fan-out."""
    return sum(values)


def add_args(*values: int) -> int:
    """The reduce after a fan-out, for tools that pass upstream values as arguments."""
    return sum(values)


def first_element(X: Any) -> float:
    """A cheap step over a big array input (the work is in the cache lookup)."""
    return float(X.flat[0])
