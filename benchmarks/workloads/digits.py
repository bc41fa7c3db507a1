"""Workload G: the README's end-to-end ML pipeline (``examples/digits.py``), side by side.

* cold — a fresh, empty store (cache folder) for every run: every step executes (scikit-learn
  fits included);
* fully cached — the same store every run: every step is a cache hit.

Seconds per pipeline run (plan, run and loading the output). mlflowkit runs the example as its
README shows (``digits.plan().run(store=...)``, default progress); Hamilton (``with_cache``)
and ``joblib.Memory`` run the same steps ported in ``digits_peers`` and must find the same
best model and accuracy. Dask, Prefect and redun are not ported.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import time
from typing import Any

from benchmarks.core import REPO_ROOT, Bench, Case, Config, Group, Metric
from benchmarks.peers import fresh_dir

__all__ = ["groups"]


def _example() -> Any:
    folder = str(REPO_ROOT / "examples")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("digits")


class DigitsBench(Bench):
    """``digits.plan().run(store=...)`` and its output, cold or fully cached."""

    def __init__(self, cfg: Config, cached: bool) -> None:
        super().__init__(cfg)
        self.pipeline = _example().digits
        self.cached = cached
        self.root = fresh_dir(cfg.workdir, "digits-")
        self.store = fresh_dir(self.root, "store-")
        if cached:
            self._run(self.store)  # populate

    def _run(self, store: str) -> tuple[float, Any]:
        t0 = time.perf_counter()
        run = self.pipeline.plan().run(store=store)
        out = run.output
        elapsed = time.perf_counter() - t0
        if not 0.5 < out["accuracy"] <= 1.0:
            raise RuntimeError(f"unexpected accuracy {out['accuracy']!r}")
        return elapsed, run

    def once(self) -> dict[str, float]:
        store = self.store if self.cached else fresh_dir(self.root, "store-")
        elapsed, run = self._run(store)
        if self.cached and any(s.status != "cached" for s in run.steps):
            missed = [s.name for s in run.steps if s.status != "cached"]
            raise RuntimeError(f"expected every step to be a cache hit, found {missed}")
        if not self.cached:
            shutil.rmtree(store, ignore_errors=True)
        return {"s": elapsed}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _check(tool: str, out: dict[str, Any]) -> None:
    if not 0.5 < out["accuracy"] <= 1.0:
        raise RuntimeError(f"{tool}: unexpected accuracy {out['accuracy']!r}")


class _PeerDigits(Bench):
    """A port of the example, cold (a fresh cache folder per run) or fully cached."""

    tool = ""

    def __init__(self, cfg: Config, cached: bool) -> None:
        super().__init__(cfg)
        self.cached = cached
        self.root = fresh_dir(cfg.workdir, f"digits-{self.tool}-")
        self.cache = fresh_dir(self.root, "cache-")
        if cached:
            self.run(self.cache)  # populate

    def run(self, cache: str) -> dict[str, Any]:
        raise NotImplementedError

    def once(self) -> dict[str, float]:
        cache = self.cache if self.cached else fresh_dir(self.root, "cache-")
        t0 = time.perf_counter()
        out = self.run(cache)
        elapsed = time.perf_counter() - t0
        _check(self.tool, out)
        if not self.cached:
            shutil.rmtree(cache, ignore_errors=True)
        return {"s": elapsed}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class JoblibDigits(_PeerDigits):
    """Every step a ``joblib.Memory(cache).cache``-d function (``digits_peers.run_joblib``)."""

    tool = "joblib"

    def run(self, cache: str) -> dict[str, Any]:
        from benchmarks.workloads import digits_peers

        return digits_peers.run_joblib(cache)


class HamiltonDigits(_PeerDigits):
    """The generated Hamilton module, driver built ``with_cache(cache)`` per run."""

    tool = "hamilton"

    def __init__(self, cfg: Config, cached: bool) -> None:
        from benchmarks.workloads import digits_peers

        self.module = digits_peers.hamilton_module(fresh_dir(cfg.workdir, "digits-modules-"))
        super().__init__(cfg, cached)

    def run(self, cache: str) -> dict[str, Any]:
        from benchmarks.workloads import digits_peers

        return digits_peers.run_hamilton(self.module, cache)


def groups(cfg: Config) -> list[Group]:
    """The digits pipeline, cold and fully cached."""
    factory = "benchmarks.workloads.digits:DigitsBench"
    not_ported = "not ported (the example is ported to Hamilton and joblib.Memory only)"
    out = []
    for row_id, label, cached in (
        ("digits/cold", "cold (empty store)", False),
        ("digits/cached", "fully cached", True),
    ):
        peers = (
            Case(
                "hamilton (with_cache)",
                "hamilton",
                "benchmarks.workloads.digits:HamiltonDigits",
                {"cached": cached},
                requires=("hamilton", "sklearn"),
                install="apache-hamilton scikit-learn",
            ),
            Case(
                "joblib.Memory",
                "joblib",
                "benchmarks.workloads.digits:JoblibDigits",
                {"cached": cached},
                requires=("joblib", "sklearn"),
                install="joblib scikit-learn",
            ),
            *(Case(tool, tool, na=not_ported) for tool in ("dask", "prefect", "redun")),
        )
        out.append(
            Group(
                "G",
                "digits pipeline",
                label,
                1,
                (Metric("s", row_id, "", "s/run"),),
                (
                    Case(
                        "mlflowkit",
                        "mlflowkit",
                        factory,
                        {"cached": cached},
                        kind="mlflowkit",
                        requires=("sklearn",),
                        install="scikit-learn",
                    ),
                    *peers,
                ),
                shared=True,
                max_reps=3,
            )
        )
    return out
