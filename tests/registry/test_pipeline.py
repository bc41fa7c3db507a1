"""mk.publish and mk.artifact in pipelines: versions, keys, lineage, explain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import mlflowkit as mk


@mk.step
def load(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@mk.step
def featurize(x: np.ndarray) -> np.ndarray:
    return x * 2.0


@mk.step
def fit(feats: np.ndarray, alpha: float = 1.0) -> tuple[float, int]:
    return float(feats.sum() * alpha), len(feats)


@mk.pipeline
def ingest(n: int = 10) -> np.ndarray:
    feats = featurize(load(n))
    return mk.publish("feats", feats, metadata={"n": n})


@mk.pipeline
def train(alpha: float = 1.0, spec: str = "feats") -> float:
    feats = mk.artifact(spec)
    total, count = fit(feats, alpha=alpha)
    mk.publish("model", total)
    mk.publish("summary", {"count": count, "alpha": alpha})
    return total


def test_publish_in_a_pipeline_makes_versions_once(store: mk.Store) -> None:
    run = ingest.plan(n=5).run(store=store, progress=False)
    v = run.published["feats"]
    assert (v.name, v.version, v.run_id, v.metadata) == ("feats", 1, run.id, {"n": 5})
    assert v.digest == run.step("featurize").output_digest
    np.testing.assert_array_equal(v.load(), np.arange(5) * 2.0)
    again = ingest.plan(n=5).run(store=store, progress=False)
    assert all(s.cached for s in again.steps)
    assert again.published["feats"] == v  # no new version for equal content
    assert len(store.versions("feats")) == 1
    assert store.run(again.id).published == [{"name": "feats", "version": 1, "digest": v.digest}]
    third = ingest.plan(n=6).run(store=store, progress=False)
    assert third.published["feats"].version == 2


def test_artifact_resolves_while_planning_and_keys_by_content(store: mk.Store) -> None:
    ingest.plan(n=4).run(store=store, progress=False)
    plan = train.plan(alpha=1.0, spec="feats")
    assert plan.consumes["artifact:feats"].version.version == 1
    ingest.plan(n=9).run(store=store, progress=False)  # version 2, published before the run
    run = plan.run(store=store, progress=False)
    assert [v.version for v in run.consumed] == [1]  # the plan kept version 1
    assert run.output == float(np.arange(4).sum() * 2.0)
    assert run.step("artifact:feats").cached
    assert run.published["model"].version == 1
    assert store.artifact("summary").load() == {"count": 4, "alpha": 1.0}
    # version 3 holds the same content as version 1: nothing downstream changes
    store.publish("feats", np.arange(4, dtype=np.float64) * 2.0)
    assert store.artifact("feats").version == 3
    rerun = train.plan(alpha=1.0).run(store=store, progress=False)
    assert [v.version for v in rerun.consumed] == [3]
    assert rerun.step("fit").cached
    assert rerun.step("fit").key == run.step("fit").key
    assert len(store.versions("model")) == 1


def test_unknown_specs_fail_while_planning(store: mk.Store) -> None:
    with pytest.raises(mk.RegistryError, match=r"no artifact named 'feats'.*no named artifacts"):
        train.plan()
    store.publish("feats", np.ones(3))
    with pytest.raises(mk.RegistryError, match="no version 5: its versions are 1"):
        train.plan(spec="feats@5")
    with pytest.raises(mk.RegistryError, match="holds stage 'mvp'"):
        train.plan(spec="feats@mvp")
    store.promote("feats@1", to="poc")
    assert train.plan(spec="feats@poc").consumes["artifact:feats"].version.version == 1


def test_publish_and_artifact_outside_a_pipeline_say_what_to_use() -> None:
    with pytest.raises(mk.RegistryError, match=r"store.publish\('x', value\)"):
        mk.publish("x", 1)
    with pytest.raises(mk.RegistryError, match=r"store.artifact\('x'\).load\(\)"):
        mk.artifact("x")


def test_publishing_a_name_twice_in_one_pipeline_is_refused(store: mk.Store) -> None:
    @mk.pipeline
    def twice() -> None:
        mk.publish("a", 1)
        mk.publish("a", 2)

    with pytest.raises(mk.RegistryError, match="already published by this pipeline"):
        twice.plan()


def test_a_run_on_a_store_lacking_the_object_names_both(tmp_path: Path) -> None:
    here, there = mk.Store(str(tmp_path / "here")), mk.Store(str(tmp_path / "there"))
    here.publish("feats", np.ones(3))

    @mk.pipeline
    def reads() -> float:
        total, _ = fit(mk.artifact("feats", store=here))
        return total

    with pytest.raises(mk.RegistryError) as err:
        reads.plan().run(store=there, progress=False)
    assert here.url in str(err.value) and there.url in str(err.value)


def test_lineage_crosses_into_the_producing_run(store: mk.Store) -> None:
    first = ingest.plan(n=3).run(store=store, progress=False)
    second = train.plan().run(store=store, progress=False)
    graph = store.lineage(second.published["model"].digest)
    runs = {n for n, a in graph.nodes(data=True) if a["kind"] == "run"}
    assert runs == {first.id, second.id}
    steps = {a["name"] for _, a in graph.nodes(data=True) if a["kind"] == "step"}
    assert {"load", "featurize", "artifact:feats", "fit"} <= steps


def test_explain_names_the_artifact_that_moved(store: mk.Store) -> None:
    ingest.plan(n=3).run(store=store, progress=False)
    train.plan().run(store=store, progress=False)
    ingest.plan(n=4).run(store=store, progress=False)
    table = train.plan().explain(store)
    by_step = {e["step"]: e for e in table}
    assert by_step["artifact:feats"]["action"] == "hit"
    assert "feats@2" in by_step["artifact:feats"]["why"]
    assert by_step["fit"]["action"] == "execute"
    assert "named artifact 'feats' moved from version 1 to version 2" in by_step["fit"]["why"]


def test_force_re_executes_steps_but_reads_artifacts(store: mk.Store) -> None:
    ingest.plan(n=3).run(store=store, progress=False)
    train.plan().run(store=store, progress=False)
    run = train.plan().run(store=store, progress=False, force=True)
    assert run.step("fit").status == "executed"
    assert run.step("artifact:feats").cached
    assert len(store.versions("model")) == 1


def test_threads_executor_reads_artifacts(store: mk.Store) -> None:
    ingest.plan(n=3).run(store=store, progress=False)
    run = train.plan(alpha=2.0).run(executor="threads", store=store, progress=False)
    assert run.output == float(np.arange(3).sum() * 2.0 * 2.0)


def test_a_pipeline_that_publishes_nothing_touches_no_registry_table(tmp_path: Path) -> None:
    @mk.pipeline
    def plain(n: int = 3) -> np.ndarray:
        return featurize(load(n))

    url = tmp_path / "s"
    with mk.Store(str(url)) as store:
        run = plain.plan().run(store=store, progress=False)
        store.runs()
        assert run.record.published == [] and run.record.consumed == []
        assert run.published == {} and run.consumed == []
    conn = sqlite3.connect(str(url / "index.sqlite"))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert not {t for t in tables if t.startswith("registry_")}


def test_a_failed_run_publishes_nothing(store: mk.Store) -> None:
    @mk.step
    def boom(x: np.ndarray) -> np.ndarray:
        raise ValueError("no")

    @mk.pipeline
    def failing() -> np.ndarray:
        return mk.publish("never", boom(load(2)))

    with pytest.raises(mk.RunFailed):
        failing.plan().run(store=store, progress=False)
    assert store.versions("never") == []


@mk.step
def scored(x: np.ndarray) -> float:
    accuracy = float(x.mean()) / 10
    mk.log_metric("accuracy", accuracy)
    return accuracy


@mk.pipeline
def evaluated(n: int = 10) -> float:
    return mk.publish("scored", scored(load(n)))


def test_a_version_carries_the_metrics_of_the_run_that_made_it(store: mk.Store) -> None:
    run = evaluated.plan(n=10).run(store=store, progress=False)
    assert run.published["scored"].metrics == {"scored.accuracy": 0.45} == run.metrics
    assert store.artifact("scored@1").metrics == {"scored.accuracy": 0.45}  # read back later
    # a cached re-run finds the same version, with the metrics of the execution it reuses
    assert evaluated.plan(n=10).run(store=store, progress=False).published["scored"].metrics == {
        "scored.accuracy": 0.45
    }
    # so a gate can decide on them
    passed = store.promote(
        "scored@1",
        to="poc",
        gates=[lambda v: v.metrics["scored.accuracy"] >= 0.4],
    )
    assert passed.to_stage == "poc"
    with pytest.raises(mk.GateFailed):
        store.promote(
            "scored@1", to="prototype", gates=[lambda v: v.metrics["scored.accuracy"] > 0.9]
        )
    assert store.publish("outside", 3).metrics == {}  # no producing run
