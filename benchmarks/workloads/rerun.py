"""Workload C: a fully cached re-run of a chain of 200 steps, in a fresh process.

At setup each tool runs the chain once in a fresh process (populating its cache in a folder of
its own). Every measurement is another fresh process that runs the same chain, where every
step is a cache hit. Two numbers per measurement:

* the run call, timed inside the child from just before the run call (graph building and
  opening the cache included, imports excluded) to just after, in µs per step;
* the whole process, timed by the parent (interpreter start, imports, run, exit), in ms.

Prefect's temporary API server is started before the child's timer (it is in the whole-process
time).
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.core import Config, Group, Metric
from benchmarks.fresh import cached_peer_cases
from benchmarks.peers import hamilton_chain_module, prefect_environment, quiet_redun
from benchmarks.workloads import bodies

__all__ = ["groups"]


def _done(tool: str, got: Any, n: int, t0: float, t1: float) -> dict[str, float]:
    if got != n:
        raise RuntimeError(f"{tool} computed {got!r}, expected {n}")
    return {"run_s": t1 - t0}


def child_mlflowkit(mode: str, folder: str, n: int) -> dict[str, float]:
    """``chain.plan(n).run(store).output``; in ``measure`` mode every step must be a hit."""
    from benchmarks.workloads import mk_pipelines

    store = os.path.join(folder, "store")
    t0 = time.perf_counter()
    run = mk_pipelines.chain.plan(n=n, start=0).run(store=store)
    out = run.output
    t1 = time.perf_counter()
    if mode == "measure":
        hits = sum(s.status == "cached" for s in run.steps)
        if hits != n:
            raise RuntimeError(f"expected {n} cache hits, found {hits}")
    return _done("mlflowkit", out, n, t0, t1)


def child_joblib(mode: str, folder: str, n: int) -> dict[str, float]:
    """``joblib.Memory(folder).cache(inc)`` called ``n`` times in a loop."""
    import joblib

    t0 = time.perf_counter()
    step = joblib.Memory(os.path.join(folder, "memory"), verbose=0).cache(bodies.inc)
    x = 0
    for _ in range(n):
        x = step(x)
    t1 = time.perf_counter()
    return _done("joblib", x, n, t0, t1)


def child_hamilton(mode: str, folder: str, n: int) -> dict[str, float]:
    """A generated chain module, driver built ``with_cache`` and executed."""
    from hamilton import driver

    module = hamilton_chain_module(folder, n)
    t0 = time.perf_counter()
    dr = driver.Builder().with_modules(module).with_cache(path=os.path.join(folder, "cache"))
    out = dr.build().execute([f"s{n - 1}"], inputs={"start": 0})
    t1 = time.perf_counter()
    return _done("hamilton", out[f"s{n - 1}"], n, t0, t1)


def child_prefect(mode: str, folder: str, n: int) -> dict[str, float]:
    """A flow over a task with persisted results and an input-based cache policy."""
    prefect_environment(os.path.join(folder, "prefect-home"))
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE
    from prefect.client.orchestration import get_client

    step = task(bodies.inc, persist_result=True, cache_policy=INPUTS + TASK_SOURCE)

    def chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = step(x)
        return x

    pipeline = flow(chain, name="chain", persist_result=True)
    with get_client(sync_client=True) as client:  # starts the temporary server
        client.hello()
    t0 = time.perf_counter()
    out = pipeline(n=n)
    t1 = time.perf_counter()
    return _done("prefect", out, n, t0, t1)


def child_redun(mode: str, folder: str, n: int) -> dict[str, float]:
    """A redun task called ``n`` times, run by a Scheduler on a database file."""
    quiet_redun()
    from redun import Scheduler, task
    from redun.config import Config as RedunConfig

    step = task(name="inc", namespace="mlflowkit_bench")(bodies.inc)
    os.makedirs(folder, exist_ok=True)
    uri = f"sqlite:///{os.path.join(folder, 'redun.db')}"
    t0 = time.perf_counter()
    scheduler = Scheduler(config=RedunConfig({"backend": {"db_uri": uri}}))
    scheduler.load()
    x: Any = 0
    for _ in range(n):
        x = step(x)
    out = scheduler.run(x)
    t1 = time.perf_counter()
    return _done("redun", out, n, t0, t1)


def groups(cfg: Config) -> list[Group]:
    """The fresh-process cached re-run comparison."""
    n = cfg.rerun_n
    return [
        Group(
            "C",
            "cached re-run",
            f"fresh process, {n} cached steps",
            n,
            (
                Metric("run_s", "rerun/run", "run call", "µs/step", scale=1e6 / n),
                Metric("process_s", "rerun/process", "whole process", "ms", scale=1e3),
            ),
            cached_peer_cases("benchmarks.workloads.rerun", n=n),
            shared=True,
        )
    ]
