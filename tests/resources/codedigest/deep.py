"""The bottom of the call chain: pipeline.entry -> helpers.normalize -> deep.core."""

from __future__ import annotations


def core(x: float) -> float:
    """Two calls below the entry point."""
    # the factor below is what the "deep edit" test changes
    return x * 3.0


def unused(x: float) -> float:
    return x - 1.0
