"""User helpers one call below the entry point."""

from __future__ import annotations

from .deep import core

OFFSET = 1.0


def normalize(x: float) -> float:
    """Shift after the core transform."""
    return core(x) + OFFSET


def clip(x: float, limit: float) -> float:
    return min(x, limit)


class Scaler:
    """A small class: every method is part of the digest of code that refers to it."""

    def __init__(self, k: float) -> None:
        self.k = k

    def apply(self, x: float) -> float:
        return self._times(x)

    def _times(self, x: float) -> float:
        return x * self.k
