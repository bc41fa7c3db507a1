"""mk.reproduce and the reproducible / reproduces gates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlflowkit as mk
from tests.holders import remove_held


@mk.step
def make(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


@mk.step
def steady(x: np.ndarray) -> float:
    return float(x.sum())


@mk.step
def noisy(x: np.ndarray) -> float:
    return float(x.sum() + np.random.default_rng().random())  # unseeded: differs every time


@mk.step
def double(x: float) -> float:
    return 2 * x


@mk.pipeline
def good(n: int = 5) -> float:
    return mk.publish("good-model", steady(make(n)))


@mk.pipeline
def bad(n: int = 5) -> float:
    return mk.publish("bad-model", noisy(make(n)))


@mk.pipeline
def downstream() -> float:
    return mk.publish("down", double(mk.artifact("good-model@1")))


@pytest.fixture(autouse=True)
def _outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run outside any git tree, so the code-state part of ``reproducible`` does not depend on
    the state of the checkout the tests run from."""
    monkeypatch.chdir(tmp_path)


def test_a_deterministic_run_reproduces(store: mk.Store) -> None:
    run = good.plan(n=7).run(store=store, progress=False)
    again = good.plan(n=7).run(store=store, progress=False)  # all cached: still re-executed
    result = mk.reproduce(again.id, store)
    assert isinstance(result, mk.Reproduction)
    assert result.matches and result.differences == []
    assert result.compared == ["make", "steady"]
    assert "reproduces" in str(result)
    assert store.run(run.id).status == "succeeded"
    assert len(store.runs()) == 2  # the original store was not written


def test_a_non_deterministic_step_is_named(store: mk.Store) -> None:
    run = bad.plan().run(store=store, progress=False)
    result = mk.reproduce(run.id, store)
    assert not result.matches
    assert [step for step, _, _ in result.differences] == ["noisy"]
    _, recorded, new = result.differences[0]
    assert recorded == run.step("noisy").output_digest and new and new != recorded
    assert "noisy" in str(result)


def test_consumed_versions_are_pinned(store: mk.Store) -> None:
    good.plan(n=3).run(store=store, progress=False)
    run = downstream.plan().run(store=store, progress=False)
    good.plan(n=4).run(store=store, progress=False)  # a newer good-model version
    result = mk.reproduce(run.id, store)
    assert result.matches, result


def test_old_records_say_why_they_cannot_be_reproduced(store: mk.Store) -> None:
    run = good.plan().run(store=store, progress=False)
    path = Path(store.url) / "runs" / f"{run.id}.json"
    data = json.loads(path.read_text())
    del data["source"]
    path.write_text(json.dumps(data))
    with pytest.raises(mk.RegistryError, match="before run records kept the pipeline"):
        mk.reproduce(run.id, store)


def test_mvp_needs_reproducible_and_reproduces_can_be_asked(store: mk.Store) -> None:
    run = good.plan().run(store=store, progress=False)
    spec = run.published["good-model"].spec
    store.promote(spec, to="poc")
    store.promote(spec, to="prototype")
    p = store.promote(spec, to="mvp", reason="ship it", gates=[mk.gates.reproduces])
    assert [(g.name, g.passed) for g in p.gates] == [("reproducible", True), ("reproduces", True)]
    assert store.artifact("good-model@mvp").stage == "mvp"

    noisy_run = bad.plan().run(store=store, progress=False)
    spec = noisy_run.published["bad-model"].spec
    store.promote(spec, to="poc")
    with pytest.raises(mk.GateFailed) as info:
        store.promote(spec, to="prototype", gates=[mk.gates.reproduces])
    (result,) = info.value.results
    assert result.name == "reproduces" and "noisy" in result.message


def test_reproducible_fails_when_an_upstream_object_is_gone(store: mk.Store) -> None:
    run = good.plan().run(store=store, progress=False)
    spec = run.published["good-model"].spec
    store.promote(spec, to="poc")
    store.promote(spec, to="prototype")
    digest = run.step("make").output_digest
    assert digest is not None
    remove_held(store, digest)
    with pytest.raises(mk.GateFailed, match=f"object {digest[:12]} upstream of it is missing"):
        store.promote(spec, to="mvp")
    assert store.stage("good-model", "mvp") is None


def test_reproducible_fails_for_a_dirty_git_tree(store: mk.Store) -> None:
    run = good.plan().run(store=store, progress=False)
    path = Path(store.url) / "runs" / f"{run.id}.json"
    data = json.loads(path.read_text())
    data["environment"]["git_commit"] = "0" * 40
    data["environment"]["git_clean"] = False
    path.write_text(json.dumps(data))
    spec = run.published["good-model"].spec
    store.promote(spec, to="poc")
    store.promote(spec, to="prototype")
    with pytest.raises(mk.GateFailed, match="uncommitted changes"):
        store.promote(spec, to="mvp")
