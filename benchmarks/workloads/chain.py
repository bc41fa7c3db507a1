"""Workload A: a chain of trivial steps, each taking the previous one's output.

Three variants, in µs per step, planning (graph building) included:

* orchestration only — mlflowkit with ``cache=False``; peers without persistence;
* every output persisted — mlflowkit's default store in a fresh folder, joblib.Memory, Hamilton
  with caching, Prefect with persisted results, redun with a database file;
* a chain of 10,000 steps, orchestration only (peers that recurse per step fail here).

Each run starts the chain at a new value, so no run can reuse an earlier run's results. The
folders runs write to are deleted when the comparison ends, not between runs (deleting
thousands of files would load the disk during the next tool's measurement).
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from typing import Any

from benchmarks.core import Bench, Case, Config, Group, Metric
from benchmarks.peers import (
    fresh_dir,
    hamilton_chain_module,
    prefect_environment,
    quiet_redun,
)
from benchmarks.workloads import bodies

__all__ = ["groups"]

_STARTS = itertools.count(1_000_000, 1_000_000)


def _check(tool: str, got: Any, want: int) -> None:
    if got != want:
        raise RuntimeError(f"{tool} computed {got!r}, expected {want}")


class _ChainBench(Bench):
    """Common parameters: ``n`` steps, ``persist`` outputs or not."""

    def __init__(self, cfg: Config, n: int, persist: bool = False) -> None:
        super().__init__(cfg)
        self.n = n
        self.persist = persist
        self.root = fresh_dir(cfg.workdir, f"chain-{type(self).__name__}-")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowkitChain(_ChainBench):
    """``chain.plan(n).run(store)``: one step called ``n`` times in a pipeline loop."""

    def __init__(self, cfg: Config, n: int, persist: bool = False) -> None:
        super().__init__(cfg, n, persist)
        from benchmarks.workloads import mk_pipelines

        self.pipeline = mk_pipelines.chain if persist else mk_pipelines.chain_volatile
        self.store = fresh_dir(self.root, "store-")

    def once(self) -> dict[str, float]:
        start = next(_STARTS)
        store = fresh_dir(self.root, "store-") if self.persist else self.store
        t0 = time.perf_counter()
        run = self.pipeline.plan(n=self.n, start=start).run(store=store)
        out = run.output
        elapsed = time.perf_counter() - t0
        _check("mlflowkit", out, start + self.n)
        if self.persist:
            executed = sum(s.status == "executed" for s in run.steps)
            if executed != self.n:
                raise RuntimeError(f"expected {self.n} executed steps, found {executed}")
        return {"s": elapsed}


class DaskDelayedChain(_ChainBench):
    """``dask.delayed(inc)`` called in a loop, computed with the synchronous scheduler."""

    def once(self) -> dict[str, float]:
        import dask

        start = next(_STARTS)
        t0 = time.perf_counter()
        step = dask.delayed(bodies.inc)
        x: Any = start
        for _ in range(self.n):
            x = step(x)
        out = x.compute(scheduler="sync")
        elapsed = time.perf_counter() - t0
        _check("dask", out, start + self.n)
        return {"s": elapsed}


class DaskGraphChain(_ChainBench):
    """A hand-written Dask graph (a dict of tasks) run by the synchronous scheduler."""

    def once(self) -> dict[str, float]:
        from dask.local import get_sync

        start = next(_STARTS)
        t0 = time.perf_counter()
        graph: dict[Any, Any] = {("s", 0): (bodies.inc, start)}
        for i in range(1, self.n):
            graph[("s", i)] = (bodies.inc, ("s", i - 1))
        out = get_sync(graph, ("s", self.n - 1))
        elapsed = time.perf_counter() - t0
        _check("dask", out, start + self.n)
        return {"s": elapsed}


class HamiltonChain(_ChainBench):
    """A generated module of ``n`` chained functions; driver built and executed per run.

    Hamilton walks the graph recursively, a few frames per node: for deep graphs its users
    raise Python's recursion limit (``sys.setrecursionlimit``), and so does this case, to a
    limit that fits the chain (never lowering it), so the row shows a time, not an error.
    """

    def __init__(self, cfg: Config, n: int, persist: bool = False) -> None:
        super().__init__(cfg, n, persist)
        self.module = hamilton_chain_module(self.root, n)
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * n + 1000))

    def once(self) -> dict[str, float]:
        from hamilton import driver

        start = next(_STARTS)
        cache = fresh_dir(self.root, "cache-") if self.persist else None
        t0 = time.perf_counter()
        builder = driver.Builder().with_modules(self.module)
        if cache is not None:
            builder = builder.with_cache(path=cache)
        out = builder.build().execute([f"s{self.n - 1}"], inputs={"start": start})
        elapsed = time.perf_counter() - t0
        _check("hamilton", out[f"s{self.n - 1}"], start + self.n)
        return {"s": elapsed}


class PrefectChain(_ChainBench):
    """A flow calling a task ``n`` times; the temporary API server is started beforehand."""

    def __init__(self, cfg: Config, n: int, persist: bool = False) -> None:
        super().__init__(cfg, n, persist)
        prefect_environment(f"{cfg.workdir}/prefect-home-workers")
        from prefect import flow, task
        from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

        if persist:
            step = task(bodies.inc, persist_result=True, cache_policy=INPUTS + TASK_SOURCE)
        else:
            step = task(bodies.inc, persist_result=False, cache_policy=NO_CACHE)

        def chain(n: int, start: int) -> int:
            x = start
            for _ in range(n):
                x = step(x)
            return x

        self.flow = flow(chain, name="chain", persist_result=persist)
        self.flow(n=1, start=0)  # starts the temporary server, outside the measurements

    def info(self) -> dict[str, Any]:
        return {"note": "temporary local API server started before timing"}

    def once(self) -> dict[str, float]:
        start = next(_STARTS)
        t0 = time.perf_counter()
        out = self.flow(n=self.n, start=start)
        elapsed = time.perf_counter() - t0
        _check("prefect", out, start + self.n)
        return {"s": elapsed}


class RedunChain(_ChainBench):
    """A redun task called ``n`` times in a loop (lazy expressions), run by a Scheduler.

    redun always records to a database: in memory for "orchestration only", in a file in a fresh
    folder when persisting. Making the scheduler is part of the timed run.
    """

    def __init__(self, cfg: Config, n: int, persist: bool = False) -> None:
        super().__init__(cfg, n, persist)
        quiet_redun()
        from redun import task

        self.step = task(name="inc", namespace="mlflowkit_bench", cache=persist)(bodies.inc)

    def info(self) -> dict[str, Any]:
        if self.persist:
            return {}
        return {"note": "records to an in-memory database (redun cannot turn it off)"}

    def once(self) -> dict[str, float]:
        from redun import Scheduler
        from redun.config import Config as RedunConfig

        start = next(_STARTS)
        folder = fresh_dir(self.root, "redun-") if self.persist else None
        uri = f"sqlite:///{folder}/redun.db" if folder else "sqlite:///:memory:"
        t0 = time.perf_counter()
        scheduler = Scheduler(config=RedunConfig({"backend": {"db_uri": uri}}))
        scheduler.load()
        x: Any = start
        for _ in range(self.n):
            x = self.step(x)
        out = scheduler.run(x)
        elapsed = time.perf_counter() - t0
        _check("redun", out, start + self.n)
        return {"s": elapsed}


class JoblibChain(_ChainBench):
    """``joblib.Memory(fresh folder).cache(inc)`` called in a loop (persisted only)."""

    def once(self) -> dict[str, float]:
        import joblib

        start = next(_STARTS)
        folder = fresh_dir(self.root, "memory-")
        t0 = time.perf_counter()
        step = joblib.Memory(folder, verbose=0).cache(bodies.inc)
        x = start
        for _ in range(self.n):
            x = step(x)
        elapsed = time.perf_counter() - t0
        _check("joblib", x, start + self.n)
        return {"s": elapsed}


def _cases(n: int, persist: bool) -> tuple[Case, ...]:
    here = "benchmarks.workloads.chain:"
    p = {"n": n, "persist": persist}
    no_store = "no persistence of task outputs"
    return (
        Case("mlflowkit", "mlflowkit", here + "MlflowkitChain", p, kind="mlflowkit"),
        Case(
            "dask (delayed, sync)",
            "dask",
            here + "DaskDelayedChain",
            p,
            na=no_store if persist else None,
            requires=("dask",),
            install="dask",
        ),
        Case(
            "dask (graph dict, sync)",
            "dask",
            here + "DaskGraphChain",
            p,
            na=no_store if persist else None,
            requires=("dask",),
            install="dask",
        ),
        Case(
            "hamilton",
            "hamilton",
            here + "HamiltonChain",
            p,
            requires=("hamilton",),
            install="apache-hamilton",
        ),
        Case(
            "prefect", "prefect", here + "PrefectChain", p, requires=("prefect",), install="prefect"
        ),
        Case("redun", "redun", here + "RedunChain", p, requires=("redun",), install="redun"),
        Case(
            "joblib.Memory" if persist else "joblib",
            "joblib",
            here + "JoblibChain",
            p,
            na=None if persist else "joblib has no task graph to orchestrate (plain calls)",
            requires=("joblib",),
            install="joblib",
        ),
    )


def groups(cfg: Config) -> list[Group]:
    """The three chain comparisons."""
    out = []
    for row_id, label, n, persist, reps in (
        ("chain/orchestration", "orchestration only", cfg.chain_n, False, None),
        ("chain/persisted", "every output persisted", cfg.chain_n, True, None),
        ("chain/orchestration-long", "orchestration only", cfg.chain_long_n, False, 3),
    ):
        metric = Metric("s", row_id, "", "µs/step", scale=1e6 / n)
        out.append(
            Group(
                "A",
                "chain",
                f"{label}, {n} steps",
                n,
                (metric,),
                _cases(n, persist),
                max_reps=reps,
            )
        )
    return out
