"""Workload D: a cache hit for a step whose input is a big float64 array (1 GiB).

At setup each tool runs the step once in a fresh process (populating its cache). Every
measurement is another fresh process that builds the same array (outside the timer), then
calls the cached step: the time of that call (hashing the input and looking the result up is
the work) and the peak memory it added above the process's peak before the call (from
``getrusage``'s maximum resident set size; the array itself is not counted).
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.core import MIB, Config, Group, Metric
from benchmarks.fresh import cached_peer_cases, peak_rss_bytes
from benchmarks.peers import prefect_environment, quiet_redun
from benchmarks.workloads import bodies

__all__ = ["groups"]

_HAMILTON_MODULE = '''"""A generated one-node module for Hamilton."""

import numpy as np


def first_element(X: np.ndarray) -> float:
    return float(X.flat[0])
'''


def make_array(nbytes: int) -> Any:
    """The same float64 array of ``nbytes`` bytes in every process (every page touched)."""
    import numpy as np

    return np.arange(nbytes // 8, dtype=np.float64)


def _measure(call: Any, X: Any) -> dict[str, float]:
    before = peak_rss_bytes()
    t0 = time.perf_counter()
    out = call()
    t1 = time.perf_counter()
    extra = max(0, peak_rss_bytes() - before)
    if out != float(X.flat[0]):
        raise RuntimeError(f"computed {out!r}, expected {float(X.flat[0])!r}")
    return {"s": t1 - t0, "peak_bytes": float(extra)}


def child_mlflowkit(mode: str, folder: str, nbytes: int) -> dict[str, float]:
    """``big_input.plan(X=X).run(store).output``; in ``measure`` mode the step must be a hit."""
    from benchmarks.workloads import mk_pipelines

    store = os.path.join(folder, "store")
    X = make_array(nbytes)
    runs: list[Any] = []

    def call() -> Any:
        run = mk_pipelines.big_input.plan(X=X).run(store=store)
        runs.append(run)
        return run.output

    result = _measure(call, X)
    if mode == "measure" and runs[0].steps[0].status != "cached":
        raise RuntimeError(f"expected a cache hit, found {runs[0].steps[0].status!r}")
    return result


def child_joblib(mode: str, folder: str, nbytes: int) -> dict[str, float]:
    """``joblib.Memory(folder).cache(first_element)(X)``."""
    import joblib

    X = make_array(nbytes)
    memory = joblib.Memory(os.path.join(folder, "memory"), verbose=0)
    return _measure(lambda: memory.cache(bodies.first_element)(X), X)


def child_hamilton(mode: str, folder: str, nbytes: int) -> dict[str, float]:
    """A one-node Hamilton module, driver built ``with_cache``, ``X`` passed as an input."""
    import importlib
    import sys

    from hamilton import driver

    path = os.path.join(folder, "hamilton_big_input.py")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(_HAMILTON_MODULE)
    sys.path.insert(0, folder)
    module = importlib.import_module("hamilton_big_input")
    X = make_array(nbytes)

    def call() -> Any:
        dr = driver.Builder().with_modules(module).with_cache(path=os.path.join(folder, "cache"))
        return dr.build().execute(["first_element"], inputs={"X": X})["first_element"]

    return _measure(call, X)


def child_redun(mode: str, folder: str, nbytes: int) -> dict[str, float]:
    """A redun task over ``X``, run by a Scheduler on a database file."""
    quiet_redun()
    from redun import Scheduler, task
    from redun.config import Config as RedunConfig

    step = task(name="first_element", namespace="mlflowkit_bench")(bodies.first_element)
    uri = f"sqlite:///{os.path.join(folder, 'redun.db')}"
    X = make_array(nbytes)

    def call() -> Any:
        scheduler = Scheduler(config=RedunConfig({"backend": {"db_uri": uri}}))
        scheduler.load()
        return scheduler.run(step(X))

    return _measure(call, X)


def child_prefect(mode: str, folder: str, nbytes: int) -> dict[str, float]:
    """A flow over a task with persisted results and an input-based cache policy."""
    prefect_environment(os.path.join(folder, "prefect-home"))
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE
    from prefect.client.orchestration import get_client

    step = task(bodies.first_element, persist_result=True, cache_policy=INPUTS + TASK_SOURCE)

    def big_input() -> float:
        return step(X)

    pipeline = flow(big_input, name="big_input", persist_result=True)
    X = make_array(nbytes)
    with get_client(sync_client=True) as client:  # starts the temporary server
        client.hello()
    return _measure(pipeline, X)


def groups(cfg: Config) -> list[Group]:
    """The big-input cache hit comparison."""
    nbytes = cfg.big_bytes
    size = f"{nbytes / (1 << 30):g} GiB" if nbytes >= 1 << 30 else f"{nbytes // MIB} MiB"
    return [
        Group(
            "D",
            "big input",
            f"cache hit, {size} float64 input, fresh process",
            nbytes,
            (
                Metric("s", "bigcache/time", "time", "s"),
                Metric("peak_bytes", "bigcache/memory", "peak extra memory", "MiB", scale=1 / MIB),
            ),
            cached_peer_cases("benchmarks.workloads.bigcache", nbytes=nbytes),
            shared=True,
            max_reps=3,
        )
    ]
