"""A small DAG used by the tests as a real module (importable by worker processes)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk


@mk.step
def make_data(n: int, seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    return X, y


@mk.step
def fit(X: NDArray[np.float64], y: NDArray[np.float64], alpha: float = 1.0) -> NDArray[np.float64]:
    d = X.shape[1]
    return np.linalg.solve(X.T @ X + alpha * np.eye(d), X.T @ y)


@mk.step
def score(w: NDArray[np.float64], X: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    return float(np.mean((X @ w - y) ** 2))


@mk.pipeline
def train(n: int = 100, alpha: float = 0.1) -> Any:
    X, y = make_data(n)
    w = fit(X, y, alpha=alpha)
    return score(w, X, y)


@mk.step
def inc(x: int) -> int:
    return x + 1


@mk.step
def square(x: int) -> int:
    return x * x


@mk.step
def total(xs: list[int]) -> int:
    return sum(xs)


@mk.step
def split(n: int) -> list[int]:
    return list(range(n))


@mk.pipeline
def fan(n: int = 5) -> Any:
    parts = split(n)
    squares = square.map(x=parts)
    return total(squares)


@mk.pipeline
def chain(n: int = 10) -> Any:
    x = inc(0)
    for _ in range(n - 1):
        x = inc(x)
    return x
