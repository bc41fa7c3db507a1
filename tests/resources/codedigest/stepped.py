"""A step whose decorator options (execution hints) must not change its code digest."""

from __future__ import annotations

import mlflowkit as mk

from .helpers import normalize


@mk.step(retries=1, timeout=10.0)
def fit(x: float, alpha: float = 0.1) -> float:
    return normalize(x) * alpha


@mk.step
def chained(x: float) -> float:
    return fit.fn(x) + 1.0
