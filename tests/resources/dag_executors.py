"""Pipelines for the executor acceptance tests (a real module: worker processes import it).

Steps that must behave differently on a retry (kill their worker once, fail once) keep their
state in marker files under a folder passed as a parameter, never in module globals, because
they run in other processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk

#: When set to a pid, unpickling a ``Heavy`` value in that process raises (see ``Heavy``).
TRIPWIRE_ENV = "MLFLOWKIT_TEST_NO_HEAVY_IN_PID"


# --- one pipeline exercising the common shapes ------------------------------------------------
@mk.step
def make_data(n: int, seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    return X, y


@mk.step
def fit(X: NDArray[np.float64], y: NDArray[np.float64], alpha: float = 1.0) -> NDArray[np.float64]:
    return np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)


@mk.step
def chunks(n: int) -> list[int]:
    return list(range(n))


@mk.step
def noisy(i: int) -> float:
    return float(mk.rng().normal() + i)


@mk.step
def summarize(w: NDArray[np.float64], xs: list[float]) -> dict[str, Any]:
    return {"w": [round(float(v), 12) for v in w], "total": round(sum(xs), 12), "n": len(xs)}


@mk.pipeline
def mixed(n: int = 40, k: int = 5, alpha: float = 0.5) -> Any:
    X, y = make_data(n)
    w = fit(X, y, alpha=alpha)
    parts = chunks(k)
    values = noisy.map(i=parts)
    return {"summary": summarize(w, values), "w": w, "first": values}


# --- trivial fan-out ------------------------------------------------------------------------
@mk.step
def ids(n: int) -> list[int]:
    return list(range(n))


@mk.step
def inc(x: int) -> int:
    return x + 1


@mk.step(cache=False)
def inc_uncached(x: int) -> int:
    return x + 1


@mk.step
def count(xs: list[int]) -> int:
    return len(xs) + sum(xs)


@mk.pipeline
def wide(n: int = 1000) -> Any:
    return count(inc.map(x=ids(n)))


@mk.pipeline
def wide_uncached(n: int = 1000) -> Any:
    return count(inc_uncached.map(x=ids(n)))


# --- big values that must never reach the client ---------------------------------------------
def _rebuild_heavy(data: NDArray[np.float64]) -> Heavy:
    if os.environ.get(TRIPWIRE_ENV) == str(os.getpid()):
        raise RuntimeError(
            f"a Heavy value ({data.nbytes} bytes) was unpickled in the process that must "
            f"never receive one (pid {os.getpid()})"
        )
    return Heavy(data)


class Heavy:
    """A big array whose unpickling in the process named by ``TRIPWIRE_ENV`` fails loudly."""

    def __init__(self, data: NDArray[np.float64]) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        return (_rebuild_heavy, (self.data,))

    def __mlflowkit_hash__(self) -> Any:
        return self.data


@mk.step
def heavy(seed: int, mb: int = 16) -> Heavy:
    return Heavy(np.random.default_rng(seed).random(mb * 1024 * 1024 // 8))


@mk.step
def heavy_sum(h: Heavy) -> float:
    return float(h.data.sum())


@mk.step
def heavy_mix(a: Heavy, b: Heavy) -> Heavy:
    return Heavy(a.data * 0.5 + b.data * 0.5)


@mk.pipeline
def big(mb: int = 16) -> Any:
    a = heavy(1, mb)
    b = heavy(2, mb)
    return [heavy_sum(a), heavy_sum(heavy_mix(a, b))]


# --- workers that die -------------------------------------------------------------------------
@mk.step
def slow_upstream(x: int, folder: str) -> int:
    (Path(folder) / f"upstream-{x}-{os.getpid()}-{time.time_ns()}").touch()
    return x * 3


@mk.step
def die_once(x: int, folder: str) -> int:
    marker = Path(folder) / "died-once"
    if not marker.exists():
        marker.touch()
        os._exit(13)
    return x + 1


@mk.step
def die_always(x: int) -> int:
    os._exit(13)


@mk.pipeline
def dies_once(folder: str, x: int = 2) -> Any:
    return die_once(slow_upstream(x, folder), folder)


@mk.pipeline
def dies_always(x: int = 2) -> Any:
    return die_always(inc(x))


# --- placement --------------------------------------------------------------------------------
@mk.step(resources={"gpu": 1})
def on_gpu_worker(x: int) -> dict[str, Any]:
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    restrictions = dict(worker.state.tasks[key].resource_restrictions or {})
    return {"x": x, "restrictions": restrictions, "total": dict(worker.state.total_resources)}


@mk.pipeline
def placed(x: int = 1) -> Any:
    return on_gpu_worker(x)


# --- processes --------------------------------------------------------------------------------
@mk.step
def pid(x: int) -> int:
    return os.getpid()


@mk.pipeline
def pids(n: int = 6) -> Any:
    return pid.map(x=list(range(n)))


@mk.step
def crash(x: int) -> int:
    os._exit(7)


@mk.pipeline
def crashing(x: int = 1) -> Any:
    return crash(x)


@mk.step(timeout=0.5)
def too_slow(x: int) -> int:
    time.sleep(30)
    return x


@mk.pipeline
def slow_and_fast(n: int = 3) -> Any:
    return [too_slow(0), inc.map(x=list(range(n)))]


@mk.step
def array_out(n: int) -> NDArray[np.float64]:
    return np.arange(n, dtype=np.float64)


@mk.step
def mutate_and_sum(a: NDArray[np.float64]) -> float:
    a += 1.0  # input arrays arrive read-only on every executor: this fails the step
    return float(a.sum())


@mk.step
def shift_and_sum(a: NDArray[np.float64]) -> float:
    return float((a + 1.0).sum())


@mk.step(cache=False)
def array_uncached(n: int) -> NDArray[np.float64]:
    return np.ones(n)


@mk.pipeline
def arrays(n: int = 1000) -> Any:
    return [shift_and_sum(array_uncached(n)), array_out(n)]


@mk.pipeline
def mutating(n: int = 10) -> Any:
    return mutate_and_sum(array_uncached(n))


@mk.step
def exits(x: int) -> int:
    raise SystemExit(3)


@mk.pipeline
def exiting(x: int = 1) -> Any:
    return exits(inc(x))


@mk.step
def big_array(mb: int) -> NDArray[np.float64]:
    return np.ones(mb * 1024 * 1024 // 8)


@mk.step
def total_of(a: NDArray[np.float64]) -> float:
    return float(a.sum())


@mk.pipeline
def big_plain(mb: int = 8) -> Any:
    return total_of(big_array(mb))


@mk.step
def die_on(x: int, bad: int) -> int:
    if x == bad:
        os._exit(13)
    return x


@mk.pipeline
def one_bad_element(n: int = 16, bad: int = 5) -> Any:
    return count(die_on.map(x=ids(n), bad=bad))


@mk.step(cache=False)
def crash_at(x: int, bad: int) -> int:
    """Ends its worker process when ``x == bad``; every other call returns ``x``."""
    if x == bad:
        os._exit(7)
    return x


@mk.pipeline
def crash_in_batch(n: int = 16, bad: int = 5) -> Any:
    return crash_at.map(x=list(range(n)), bad=bad)
