"""Workload G: the README's end-to-end ML pipeline (``examples/digits.py``), mlflowkit only.

* cold — a fresh, empty store for every run: every step executes (scikit-learn fits included);
* fully cached — the same store every run: every step is a cache hit.

Seconds per pipeline run (plan, run and loading the output). The peers would need the example
rewritten for them, so they are shown as not applicable rather than ported.
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
        run = self.pipeline.plan().run(store=store, progress=False)
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


def groups(cfg: Config) -> list[Group]:
    """The digits pipeline, cold and fully cached."""
    factory = "benchmarks.workloads.digits:DigitsBench"
    not_ported = "not ported (the example is written for mlflowkit; no rewrite for peers)"
    out = []
    for row_id, label, cached in (
        ("digits/cold", "cold (empty store)", False),
        ("digits/cached", "fully cached", True),
    ):
        peers = tuple(
            Case(tool, tool, na=not_ported)
            for tool in ("dask", "hamilton", "prefect", "redun", "joblib")
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
