"""Workload B: a fan-out of independent trivial tasks and one reduce, in µs per task.

Three comparisons, each with every tool's pool or cluster started once, before timing, and
reused by every run (mlflowkit gets an executor instance, kept across runs as the executors
guide shows: ``with mk.executors.get(...) as ex: plan.run(executor=ex, store=...)``):

* threads — mlflowkit ``threads`` vs Dask's threaded scheduler, ``concurrent.futures`` and
  joblib's threading backend;
* processes — mlflowkit ``processes`` vs joblib's loky backend and Dask's multiprocessing
  scheduler;
* a Dask ``LocalCluster`` of 2 worker processes (one thread each), shared by all tools —
  mlflowkit's ``dask`` executor vs Dask's own ``client.map`` and ``delayed``.

What mlflowkit does differs by group:

* threads and processes: the pipeline with its defaults — steps cached, every output persisted
  to the store (``fan_persisted``). Each run fans out over new inputs (a new start value), so
  every task and the reduce really execute and store their outputs; the run's counts are
  checked (every step executed). The peers persist nothing: the ratio includes what storing
  a thousand outputs costs mlflowkit.
* the Dask cluster: uncached steps (``cache=False``, ``fan``), nothing stored — the cost of
  mlflowkit's scheduling on a cluster against Dask's own scheduling on the same cluster.

The threads and processes groups also show mlflowkit with ``cache=False`` steps (nothing
stored), on the same executor instance kind: what the scheduling costs on its own, so the
persisted row's excess over it is what storing the outputs costs. The targets are assessed on
the persisted row (the defaults).

All pools have as many workers as this machine has cores (mlflowkit's executors included, so
every tool gets the same pool).
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from typing import Any

from benchmarks.core import Bench, Case, Config, Group, Metric, NotApplicable
from benchmarks.peers import fresh_dir
from benchmarks.workloads import bodies

__all__ = ["groups"]

#: the first input of each persisted mlflowkit fan-out: far apart, so no run reuses another's
_STARTS = itertools.count(1_000_000, 1_000_000)


def _workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _want(n: int, start: int = 0) -> int:
    return sum(i * i for i in range(start, start + n))


def _check(tool: str, got: Any, n: int, start: int = 0) -> None:
    if got != _want(n, start):
        raise RuntimeError(f"{tool} computed {got!r}, expected {_want(n, start)}")


class MlflowkitFan(Bench):
    """``plan(...).run(executor=ex, store=...)`` with one executor instance reused by every run.

    With ``persist`` (the default), the pipeline's steps have the defaults (cached, outputs
    stored) and each run fans out over new inputs into the same store, so every run executes
    and stores ``n`` tasks and the reduce (checked). Without it, the steps are ``cache=False``
    and nothing is stored.
    """

    def __init__(
        self,
        cfg: Config,
        n: int,
        executor: str,
        address: str | None = None,
        persist: bool = True,
    ) -> None:
        super().__init__(cfg)
        import mlflowkit as mk
        from benchmarks.workloads import mk_pipelines

        if executor not in mk.executors.available():
            raise NotApplicable(f"the {executor!r} executor is not available here")
        self.n = n
        self.persist = persist
        self.pipeline = mk_pipelines.fan_persisted if persist else mk_pipelines.fan
        self.root = fresh_dir(cfg.workdir, f"fan-mk-{executor}-")
        self.store = os.path.join(self.root, "store")
        options: dict[str, Any] = {"address": address} if address else {}
        if executor != "dask":
            options["max_workers"] = _workers()
        self.executor = mk.executors.get(executor, **options)

    def once(self) -> dict[str, float]:
        start = next(_STARTS) if self.persist else 0
        params = {"n": self.n, "start": start} if self.persist else {"n": self.n}
        t0 = time.perf_counter()
        run = self.pipeline.plan(**params).run(executor=self.executor, store=self.store)
        out = run.output
        elapsed = time.perf_counter() - t0
        _check("mlflowkit", out, self.n, start)
        if self.persist:
            not_executed = [s.name for s in run.steps if s.status != "executed"]
            if not_executed or len(run.steps) < self.n + 1:
                raise RuntimeError(
                    f"expected every one of the {self.n} tasks and the reduce to execute; "
                    f"{len(run.steps)} steps, not executed: {not_executed[:5]}"
                )
        return {"s": elapsed}

    def close(self) -> None:
        self.executor.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)


class DaskDelayedFan(Bench):
    """``delayed(square)`` per item and ``delayed(add_args)`` over them, on a Dask scheduler.

    ``scheduler`` is ``"threads"``, ``"processes"`` (a process pool made once and passed in)
    or ``"distributed"`` (a client of the shared cluster at ``address``).
    """

    def __init__(self, cfg: Config, n: int, scheduler: str, address: str | None = None) -> None:
        super().__init__(cfg)
        self.n = n
        self.scheduler = scheduler
        self.options: dict[str, Any] = {}
        self.pool: Any = None
        self.client: Any = None
        if scheduler == "threads":
            self.options = {"scheduler": "threads", "num_workers": _workers()}
        elif scheduler == "processes":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(
                _workers(), mp_context=multiprocessing.get_context("spawn")
            )
            self.options = {"scheduler": "processes", "pool": self.pool}
        else:
            from distributed import Client

            self.client = Client(address, set_as_default=False)
            self.options = {"scheduler": self.client}

    def once(self) -> dict[str, float]:
        import dask

        t0 = time.perf_counter()
        square = dask.delayed(bodies.square)
        total = dask.delayed(bodies.add_args)(*[square(i) for i in range(self.n)])
        (out,) = dask.compute(total, **self.options)
        elapsed = time.perf_counter() - t0
        _check("dask", out, self.n)
        return {"s": elapsed}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.client is not None:
            self.client.close()


class DaskClientMapFan(Bench):
    """``client.map(square, range(n))`` then ``client.submit(add_all, futures)``."""

    def __init__(self, cfg: Config, n: int, address: str) -> None:
        super().__init__(cfg)
        from distributed import Client

        self.n = n
        self.client = Client(address, set_as_default=False)
        self.runs = 0

    def once(self) -> dict[str, float]:
        self.runs += 1
        t0 = time.perf_counter()
        # a fresh key per run, so no run reuses results held by the cluster from the last one
        futures = self.client.map(bodies.square, range(self.n), key=self._keys())
        out = self.client.submit(bodies.add_all, futures).result()
        elapsed = time.perf_counter() - t0
        _check("dask", out, self.n)
        del futures
        return {"s": elapsed}

    def _keys(self) -> list[str]:
        return [f"square-{self.runs}-{i}" for i in range(self.n)]

    def close(self) -> None:
        self.client.close()


class ConcurrentFuturesFan(Bench):
    """``ThreadPoolExecutor.map(square, range(n))`` and ``sum``; the pool is made once."""

    def __init__(self, cfg: Config, n: int) -> None:
        super().__init__(cfg)
        from concurrent.futures import ThreadPoolExecutor

        self.n = n
        self.pool = ThreadPoolExecutor(_workers())

    def once(self) -> dict[str, float]:
        t0 = time.perf_counter()
        out = bodies.add_all(list(self.pool.map(bodies.square, range(self.n))))
        elapsed = time.perf_counter() - t0
        _check("concurrent.futures", out, self.n)
        return {"s": elapsed}

    def close(self) -> None:
        self.pool.shutdown()


class JoblibFan(Bench):
    """``Parallel(n_jobs=cores, backend=...)(delayed(square)(i) for i in range(n))``.

    The ``Parallel`` object is entered once and reused, so its workers stay up between runs.
    """

    def __init__(self, cfg: Config, n: int, backend: str) -> None:
        super().__init__(cfg)
        import joblib

        self.n = n
        self.parallel = joblib.Parallel(n_jobs=_workers(), backend=backend)
        self.parallel.__enter__()

    def once(self) -> dict[str, float]:
        import joblib

        square = joblib.delayed(bodies.square)
        t0 = time.perf_counter()
        out = bodies.add_all(self.parallel(square(i) for i in range(self.n)))
        elapsed = time.perf_counter() - t0
        _check("joblib", out, self.n)
        return {"s": elapsed}

    def close(self) -> None:
        self.parallel.__exit__(None, None, None)


class DaskClusterFixture(Bench):
    """A ``LocalCluster`` of 2 worker processes with one thread each, shared by the group."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        from distributed import LocalCluster

        self.cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )

    def info(self) -> dict[str, Any]:
        return {"address": self.cluster.scheduler_address}

    def close(self) -> None:
        self.cluster.close()


def _mlflowkit_cases(n: int, executor: str) -> tuple[Case, Case]:
    """mlflowkit with its defaults (assessed: the first), then with ``cache=False`` steps."""
    factory = "benchmarks.workloads.fanout:MlflowkitFan"
    params = {"n": n, "executor": executor}
    return (
        Case(f"mlflowkit ({executor})", "mlflowkit", factory, params, kind="mlflowkit"),
        Case(
            f"mlflowkit ({executor}, cache=False)",
            "mlflowkit",
            factory,
            {**params, "persist": False},
            kind="mlflowkit",
        ),
    )


def groups(cfg: Config) -> list[Group]:
    """The three fan-out comparisons."""
    here = "benchmarks.workloads.fanout:"
    n = cfg.fanout_n
    metric = "µs/task"
    dask_req = {"requires": ("dask",), "install": "dask"}
    dist_req = {"requires": ("dask", "distributed"), "install": "'dask[distributed]'"}
    joblib_req = {"requires": ("joblib",), "install": "joblib"}
    return [
        Group(
            "B",
            "fan-out",
            f"threads, {n} tasks + reduce (mlflowkit: outputs persisted)",
            n,
            (Metric("s", "fanout/threads", "", metric, scale=1e6 / n),),
            (
                *_mlflowkit_cases(n, "threads"),
                Case(
                    "dask (threads)",
                    "dask",
                    here + "DaskDelayedFan",
                    {"n": n, "scheduler": "threads"},
                    **dask_req,
                ),
                Case(
                    "concurrent.futures (threads)",
                    "stdlib",
                    here + "ConcurrentFuturesFan",
                    {"n": n},
                ),
                Case(
                    "joblib (threading)",
                    "joblib",
                    here + "JoblibFan",
                    {"n": n, "backend": "threading"},
                    **joblib_req,
                ),
            ),
        ),
        Group(
            "B",
            "fan-out",
            f"processes, {n} tasks + reduce (mlflowkit: outputs persisted)",
            n,
            (Metric("s", "fanout/processes", "", metric, scale=1e6 / n),),
            (
                *_mlflowkit_cases(n, "processes"),
                Case(
                    "joblib (loky)",
                    "joblib",
                    here + "JoblibFan",
                    {"n": n, "backend": "loky"},
                    **joblib_req,
                ),
                Case(
                    "dask (processes)",
                    "dask",
                    here + "DaskDelayedFan",
                    {"n": n, "scheduler": "processes"},
                    **dask_req,
                ),
            ),
        ),
        Group(
            "B",
            "fan-out",
            f"Dask LocalCluster (2 processes), {n} tasks + reduce",
            n,
            (Metric("s", "fanout/cluster", "", metric, scale=1e6 / n),),
            (
                Case(
                    "mlflowkit (dask executor)",
                    "mlflowkit",
                    here + "MlflowkitFan",
                    {"n": n, "executor": "dask", "persist": False},
                    kind="mlflowkit",
                    **dist_req,
                ),
                Case(
                    "dask (client.map)",
                    "dask",
                    here + "DaskClientMapFan",
                    {"n": n},
                    **dist_req,
                ),
                Case(
                    "dask (delayed)",
                    "dask",
                    here + "DaskDelayedFan",
                    {"n": n, "scheduler": "distributed"},
                    **dist_req,
                ),
            ),
            fixture=here + "DaskClusterFixture",
        ),
    ]
