"""Entry points whose code digests the tests compare."""

from __future__ import annotations

import math
import threading

import numpy as np

from . import helpers
from .helpers import Scaler, clip

THRESHOLD = 0.5
LOCK = threading.Lock()


def entry(x: float, scale: float = 2.0) -> float:
    """Normalize, scale and clip."""
    y = helpers.normalize(x)  # a user-module attribute chain
    return clip(y * scale, THRESHOLD)


def uses_numpy(x: list[float]) -> float:
    return float(np.asarray(x).sum()) + math.pi


def uses_class(x: float) -> float:
    return Scaler(2.0).apply(x)


def uses_lock(x: float) -> float:
    with LOCK:
        return x


def make_adder(k: float):  # type: ignore[no-untyped-def]
    def add(x: float) -> float:
        return x + k

    return add


def is_even(n: int) -> bool:
    return True if n == 0 else is_odd(n - 1)


def is_odd(n: int) -> bool:
    return False if n == 0 else is_even(n - 1)


square = lambda x: x * x  # noqa: E731 - a module-level lambda is what the test digests

pair = (lambda x: x + 1, lambda x: x + 2)


def local_import(x: float) -> float:
    from .deep import core

    return core(x)
