"""Metrics logged on Dask workers come back with the results, and hits report them."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.resources import dag_tracking as dt

pytestmark = pytest.mark.dask


def test_metrics_logged_on_workers_are_reported_and_reused(dask_ex: Any, store: Any) -> None:
    run = dt.fan.plan(n=6).run(executor=dask_ex, store=store, progress=False)
    pids = {run.metrics[f"where[{i}].pid"] for i in range(6)}
    assert float(os.getpid()) not in pids  # logged in the worker processes
    assert {run.metrics[f"where[{i}].x"] for i in range(6)} == {float(i) for i in range(6)}
    exp = dt.experiment.plan().run(executor=dask_ex, store=store, progress=False)
    assert exp.step("train").metric_history("loss") == [(0, 0.5), (1, 0.25), (2, 0.125)]
    # hits, here and on the cluster, report the metrics of the executions they reuse
    local = dt.fan.plan(n=6).run(store=store, progress=False)
    assert {s.status for s in local.steps if not s.internal} == {"cached"}
    assert local.metrics == run.metrics
    again = dt.experiment.plan().run(executor=dask_ex, store=store, progress=False)
    assert {s.status for s in again.steps} == {"cached"}
    assert again.metrics == exp.metrics
