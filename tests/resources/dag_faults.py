"""Pipelines for fault, concurrency and integrity tests, run in real processes.

Every user step counts its executions in a file named after the step call (``load-2``,
``square[3]``) under ``$MLFLOWKIT_TEST_COUNTERS``, read when the step runs, so the directory
is not part of any code digest: runs with and without counters share their cache keys.

Run as a program, it runs :func:`faulty` once on a store and prints what happened as JSON::

    python -m tests.resources.dag_faults STORE_URL [GO_FILE]

With ``GO_FILE`` it says it is ready (``GO_FILE.ready.<pid>``), then waits for ``GO_FILE``
to exist, so that several processes start their runs at the same moment.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk

COUNTERS_ENV = "MLFLOWKIT_TEST_COUNTERS"
SLEEP_S = 0.004  # widens the window in which a step is in flight
FLOATS_PER_MIB = (1 << 20) // 8


DIE_IN_ENV = "MLFLOWKIT_TEST_DIE_IN"


def _work() -> None:
    """Count one execution of the running step call, then pause briefly.

    A step call named in ``$MLFLOWKIT_TEST_DIE_IN`` SIGKILLs its own process instead, a tenth
    of a second in (longer than the store's group commit window: what finished before it is
    kept, as it would be before any crash that comes later than that).
    """
    name = mk.current().name
    if os.environ.get(DIE_IN_ENV) == name:
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGKILL)
    folder = os.environ.get(COUNTERS_ENV)
    if folder:
        with open(os.path.join(folder, name), "a") as f:
            f.write("x")
    time.sleep(SLEEP_S)


def executions(folder: Path) -> dict[str, int]:
    """How many times each step call executed, from the counter files in ``folder``."""
    return {p.name: len(p.read_bytes()) for p in sorted(folder.iterdir())}


# the fault pipeline: arrays of 1-2 MiB, small values, a tuple, a run-time fan-out --------------


@mk.step
def load(i: int, mib: int) -> NDArray[np.float64]:
    _work()
    return mk.rng().standard_normal(mib * FLOATS_PER_MIB)


@mk.step
def scale(x: NDArray[np.float64], factor: float) -> NDArray[np.float64]:
    _work()
    return x * factor


@mk.step
def stats(x: NDArray[np.float64]) -> dict[str, float]:
    _work()
    return {"mean": float(x.mean()), "std": float(x.std()), "size": float(x.size)}


@mk.step
def items(n: int) -> list[int]:
    _work()
    # distinct values: two equal elements would share one cache key (and execute once)
    return [int(v) for v in mk.rng().choice(1000, size=n, replace=False)]


@mk.step
def square(v: int) -> int:
    _work()
    return v * v


@mk.step
def total(xs: list[int]) -> int:
    _work()
    return sum(xs)


@mk.step
def describe(n: int) -> tuple[str, int]:
    _work()
    return f"{n} items", n


@mk.step
def combine(parts: list[dict[str, float]]) -> dict[str, float]:
    _work()
    return {
        "mean": sum(p["mean"] for p in parts) / len(parts),
        "size": sum(p["size"] for p in parts),
    }


@mk.step
def report(summary: dict[str, float], squares: int, label: str, count: int) -> dict[str, Any]:
    _work()
    return {"summary": summary, "squares": squares, "label": label, "count": count}


@mk.pipeline
def faulty(width: int = 6, n: int = 8) -> Any:
    parts = []
    for i in range(width):
        x = load(i, mib=1 + i % 2)
        parts.append(stats(scale(x, factor=float(i + 1))))
    label, count = describe(n)
    return report(combine(parts), total(square.map(v=items(n))), label, count)


#: a shared index for the stores of these runs (``index=``), when set
INDEX_ENV = "MLFLOWKIT_TEST_INDEX"


def run_child(
    url: str,
    lock_lease: float | None = None,
    index: str | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Process target: run :func:`faulty` on the store at ``url`` (not fsynced; no counters).

    ``index``: the store's shared index, if any; ``env``: variables the child needs (e.g. a
    bucket's ``AWS_*``). Arguments, not the environment: a fork server keeps the environment
    it started with for every later child.
    """
    os.environ.pop(COUNTERS_ENV, None)
    os.environ.update(env or {})
    options: dict[str, Any] = {} if lock_lease is None else {"lock_lease": lock_lease}
    store = mk.Store(url, durable=False, index=index, **options)
    faulty.plan().run(store=store, progress=False)


def run_child_killed_after_taking_a_lock(url: str) -> None:
    """Process target: like :func:`run_child`, but SIGKILLed by itself at one precise moment.

    The moment is just after its first single-flight lock was taken (a kernel record lock on
    the local store's ``locks/flight``): the step holding it has not run yet.
    """
    import fcntl

    real_lockf = fcntl.lockf

    def lockf(fd: int, cmd: int, *args: Any) -> Any:
        result = real_lockf(fd, cmd, *args)
        if cmd & fcntl.LOCK_EX:  # taken (a lock held by another process raises instead)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    fcntl.lockf = lockf
    run_child(url)


# a producer and a consumer, for integrity tests ---------------------------------------------


@mk.step
def produce(n: int) -> NDArray[np.float64]:
    _work()
    return np.arange(n, dtype=np.float64) * 0.5


@mk.step
def consume(x: NDArray[np.float64]) -> float:
    _work()
    return float(x.sum())


@mk.pipeline
def pair(n: int = 1000) -> Any:
    x = produce(n)
    return x, consume(x)


def run_pair_killed_in(url: str, step_call: str) -> None:
    """Process target: run :func:`pair` on ``url`` until ``step_call`` SIGKILLs the process."""
    os.environ.pop(COUNTERS_ENV, None)
    os.environ[DIE_IN_ENV] = step_call
    pair.plan().run(store=url, progress=False)


# records and lineage: two pipelines that share their first step ----------------------------


@mk.step
def fit(x: NDArray[np.float64], alpha: float) -> float:
    _work()
    return float((x * alpha).mean())


@mk.pipeline
def training(n: int = 1000, alpha: float = 0.5) -> Any:
    return fit(produce(n), alpha)


@mk.pipeline
def evaluation(n: int = 1000) -> Any:
    return consume(produce(n))


def main(argv: list[str]) -> int:
    url = argv[0]
    if len(argv) > 1:
        go = Path(argv[1])
        Path(f"{go}.ready.{os.getpid()}").touch()
        while not go.exists():
            time.sleep(0.002)
    run = faulty.plan().run(store=mk.Store(url, index=os.environ.get(INDEX_ENV)), progress=False)
    print(
        json.dumps(
            {
                "status": run.status,
                "steps": {s.name: [s.status, s.key, s.output_digest] for s in run.steps},
                "output": mk.hash_value(run.output),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
