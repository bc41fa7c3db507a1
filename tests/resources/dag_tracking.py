"""Pipelines whose steps log metrics (a real module: worker processes and Dask import it).

Steps that must behave differently on a retry keep their state in marker files under a folder
passed as a parameter, never in module globals, because they run in other processes.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import mlflowkit as mk


@mk.step
def train(epochs: int, alpha: float) -> float:
    loss = 1.0
    for epoch in range(epochs):
        loss = loss * (1 - alpha)
        mk.log_metric("loss", loss, step=epoch)
    mk.log_metrics({"final_loss": loss, "epochs": epochs})
    return loss


@mk.step
def evaluate(loss: float) -> float:
    accuracy = 1.0 - loss / 2
    mk.log_metric("accuracy", accuracy)
    return accuracy


@mk.step
def quiet(x: float) -> float:
    return x * 2


@mk.pipeline
def experiment(epochs: int = 3, alpha: float = 0.5) -> float:
    return quiet(evaluate(train(epochs, alpha)))


@mk.step
def where(x: int) -> int:
    """Logs the process it ran in: a cache hit must report the pid of that execution."""
    mk.log_metric("pid", os.getpid())
    mk.log_metric("x", x)
    return x


@mk.pipeline
def fan(n: int = 4) -> list[int]:
    return where.map(x=list(range(n)))


@mk.step
def many(n: int) -> float:
    """Logs ``n`` values of one metric and reports how long the logging took."""
    t0 = time.perf_counter()
    for i in range(n):
        mk.log_metric("value", i * 0.5)
    return time.perf_counter() - t0


@mk.pipeline
def lots(n: int = 10_000) -> float:
    return many(n)


BAD_VALUES: dict[str, Any] = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "np-nan": np.float64("nan"),
    "str": "0.5",
    "bool": True,
    "none": None,
    "array": np.array([1.0, 2.0]),
    "complex": 1j,
    "huge-int": 10**400,
}
BAD_NAMES: dict[str, Any] = {
    "int": 3,
    "empty": "",
    "long": "m" * 251,
    "newline": "bad\nname",
    "bytes": b"loss",
    "dotdot": "a/../b",
    "slash-first": "/loss",
    "double-slash": "val//loss",
    "trailing-slash": "loss/",
}
BAD_STEPS: dict[str, Any] = {"str": "1", "float": 1.5, "bool": True, "huge": 2**64}


@mk.step
def bad_value(kind: str) -> int:
    mk.log_metric("before", 1.0)
    mk.log_metric("m", BAD_VALUES[kind])
    return 1


@mk.step
def bad_name(kind: str) -> int:
    mk.log_metric(BAD_NAMES[kind], 1.0)
    return 1


@mk.step
def bad_step(kind: str) -> int:
    mk.log_metric("m", 1.0, step=BAD_STEPS[kind])
    return 1


@mk.pipeline
def bad(what: str, kind: str) -> int:
    return {"value": bad_value, "name": bad_name, "step": bad_step}[what](kind)


@mk.step
def half_recorded() -> int:
    """A step that catches the error of a half-bad ``log_metrics`` and goes on."""
    mk.log_metric("kept", 1.0)
    try:
        mk.log_metrics({"good": 2.0, "bad": math.nan, "also_good": 3.0})
    except mk.TrackingError:
        mk.log_metric("caught", 1.0)
    return 1


@mk.pipeline
def half() -> int:
    return half_recorded()


@mk.step(retries=1)
def flaky(marker_dir: str) -> int:
    marker = Path(marker_dir) / "failed-once"
    if not marker.exists():
        mk.log_metric("attempt_one", 1.0)
        marker.write_text("x")
        raise RuntimeError("first attempt fails")
    mk.log_metric("attempt_two", 2.0)
    return 2


@mk.pipeline
def retried(marker_dir: str) -> int:
    return flaky(marker_dir)


@mk.step
def wrong_type() -> int:
    mk.log_metric("logged", 1.0)
    return "not an int"  # type: ignore[return-value]


@mk.pipeline
def mistyped() -> int:
    return wrong_type()


@mk.step(cache=False)
def side_effect(x: int) -> int:
    mk.log_metric("x", x)
    return x


@mk.pipeline
def uncached(x: int = 1) -> int:
    return side_effect(x)


@mk.step
def stamp(x: int) -> int:
    """Logs a value that differs at each execution (the same output every time)."""
    mk.log_metric("clock", time.perf_counter())
    return x


@mk.pipeline
def stamped(x: int = 1) -> int:
    return stamp(x)
