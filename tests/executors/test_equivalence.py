"""Acceptance: every executor computes the same thing, and shares one cache.

The same pipelines give identical outputs and output digests on ``local``, ``threads``,
``processes`` and ``dask``; results cached by any one of them are cache hits for all others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.executors.base import Executor
from mlflowkit.testing import dags
from tests.resources import dag_executors as dx

NAMES = ["local", "threads", "processes", "dask"]
PIPELINES = [
    pytest.param(lambda: dx.mixed.plan(n=30, k=4), id="mixed"),
    pytest.param(lambda: dags.diamond.plan(n=6), id="diamond"),
    pytest.param(lambda: dx.wide.plan(n=25), id="wide"),
]

pytestmark = pytest.mark.dask


@pytest.fixture
def executors(dask_address: str) -> Iterator[dict[str, Executor]]:
    made = {
        "local": mk.executors.get("local"),
        "threads": mk.executors.get("threads", max_workers=3),
        "processes": mk.executors.get("processes", max_workers=2),
        "dask": mk.executors.get("dask", address=dask_address),
    }
    try:
        yield made
    finally:
        for ex in made.values():
            ex.shutdown()


def _digests(run: mk.Run) -> dict[str, str | None]:
    return {s.name: s.output_digest for s in run.steps}


@pytest.mark.parametrize("make_plan", PIPELINES)
def test_same_outputs_and_digests_everywhere(
    make_plan: Callable[[], mk.Plan], executors: dict[str, Executor], tmp_path: Path
) -> None:
    runs = {
        name: make_plan().run(executor=ex, store=str(tmp_path / name), progress=False)
        for name, ex in executors.items()
    }
    reference = runs["local"]
    for name, run in runs.items():
        assert run.status == "succeeded", name
        assert {s.status for s in run.steps} == {"executed"}, name
        assert _digests(run) == _digests(reference), name
        assert mk.hash_value(run.output) == mk.hash_value(reference.output), name
        assert [s.key for s in run.steps] == [s.key for s in reference.steps], name


@pytest.mark.parametrize("first", NAMES)
def test_a_cache_filled_by_one_is_hit_by_all(
    first: str, executors: dict[str, Executor], tmp_path: Path
) -> None:
    store = mk.Store(str(tmp_path / "shared"))
    plan = dx.mixed.plan(n=20, k=3, alpha=0.25)
    filled = plan.run(executor=executors[first], store=store, progress=False)
    assert {s.status for s in filled.steps} == {"executed"}
    for name, ex in executors.items():
        if name == first:
            continue
        again = dx.mixed.plan(n=20, k=3, alpha=0.25).run(executor=ex, store=store, progress=False)
        assert {s.status for s in again.steps} == {"cached"}, (first, name)
        assert _digests(again) == _digests(filled), (first, name)
        assert mk.hash_value(again.output) == mk.hash_value(filled.output), (first, name)


def test_a_partial_cache_is_completed_by_another_executor(
    executors: dict[str, Executor], tmp_path: Path
) -> None:
    store = mk.Store(str(tmp_path / "shared"))
    dx.mixed.plan(n=20, k=2).run(executor=executors["processes"], store=store, progress=False)
    run = dx.mixed.plan(n=20, k=5).run(executor=executors["dask"], store=store, progress=False)
    status: dict[str, Any] = {s.name: s.status for s in run.steps}
    assert status["make_data"] == status["fit"] == status["noisy[0]"] == "cached"
    assert status["noisy[4]"] == "executed"
    local = dx.mixed.plan(n=20, k=5).run(
        executor="local", store=str(tmp_path / "l"), progress=False
    )
    assert mk.hash_value(run.output) == mk.hash_value(local.output)
