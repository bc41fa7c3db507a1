"""Export to MLflow, read back with ``MlflowClient``: a real tracking server and a SQLite URI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mlflowkit as mk
from mlflowkit.cli import main
from tests.resources import dag_tracking as dt

mlflow = pytest.importorskip("mlflow")
# MLflow's dependencies (SQLAlchemy, Starlette) announce their own deprecations: not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
from mlflow.tracking import MlflowClient  # noqa: E402

from mlflowkit.integrations.mlflow import export  # noqa: E402


def _runs(client: Any, experiment: str, filter_string: str = "") -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id], filter_string, max_results=1000))


def _experiments(store: Any) -> dict[str, mk.Run]:
    runs = {
        "short": dt.experiment.plan(epochs=2).run(store=store, progress=False),
        "long": dt.experiment.plan(epochs=3).run(store=store, progress=False),
        "cached": dt.experiment.plan(epochs=3).run(store=store, progress=False),
        "fan": dt.fan.plan(n=2).run(store=store, progress=False),
    }
    with pytest.raises(mk.RunFailed) as info:
        dt.mistyped.plan().run(store=store, progress=False)
    runs["failed"] = info.value.run
    return runs


def test_runs_become_mlflow_runs_with_nested_step_calls(mlflow_server: str, store: Any) -> None:
    runs = _experiments(store)
    exported = export(store, mlflow_server)
    assert set(exported) == {r.id for r in runs.values()}
    client = MlflowClient(tracking_uri=mlflow_server)

    long = runs["long"]
    got = client.get_run(exported[long.id])
    assert got.info.run_name == f"experiment {long.id}"
    assert got.info.status == "FINISHED"
    assert got.info.start_time == round(long.record.started_at * 1000)
    assert got.info.end_time == round((long.record.finished_at or 0) * 1000)
    assert got.data.params == {"epochs": "3", "alpha": "0.5"}
    assert got.data.metrics == long.metrics
    history = client.get_metric_history(got.info.run_id, "train.loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.5),
        (1, 0.25),
        (2, 0.125),
    ]
    tags = got.data.tags
    assert tags["mlflowkit.run_id"] == long.id and tags["mlflowkit.pipeline"] == "experiment"
    commit = long.record.environment["git_commit"]
    assert commit and tags["mlflow.source.git.commit"] == tags["mlflowkit.git_commit"] == commit
    train = long.step("train")
    assert tags["mlflowkit.code.tests.resources.dag_tracking/train"] == train.code_digest

    nested = _runs(client, "experiment", f"tags.`mlflow.parentRunId` = '{got.info.run_id}'")
    by_name = {r.info.run_name: r for r in nested}
    assert set(by_name) == {"train", "evaluate", "quiet"}
    child = by_name["train"]
    assert child.data.metrics == train.metrics
    assert child.data.tags["mlflowkit.cache_key"] == train.key
    assert child.data.tags["mlflowkit.code_digest"] == train.code_digest
    assert child.data.tags["mlflowkit.output_digest"] == train.output_digest
    assert child.data.params == {f"input.{k}": v for k, v in train.inputs.items()}
    assert len(client.get_metric_history(child.info.run_id, "loss")) == 3
    assert by_name["quiet"].data.metrics == {}

    # a cached run reports the metrics of the executions it reused
    cached = client.get_run(exported[runs["cached"].id])
    assert cached.data.metrics == long.metrics
    # a failed run and its failed step call
    failed = client.get_run(exported[runs["failed"].id])
    assert failed.info.status == "FAILED" and failed.data.tags["mlflowkit.status"] == "failed"
    (step,) = _runs(client, "mistyped", f"tags.`mlflow.parentRunId` = '{failed.info.run_id}'")
    assert step.info.status == "FAILED" and "TypeCheckError" in step.data.tags["mlflowkit.error"]
    # fan-out elements: brackets are not allowed in MLflow keys
    fan = client.get_run(exported[runs["fan"].id])
    assert fan.data.metrics["where/1.x"] == 1.0 and "where/0.pid" in fan.data.metrics

    # exporting twice creates nothing new
    before = {name: len(_runs(client, name)) for name in ("experiment", "fan", "mistyped")}
    assert before == {"experiment": 3 * 4, "fan": 1 + 2, "mistyped": 1 + 1}
    assert export(store, mlflow_server) == exported
    assert {name: len(_runs(client, name)) for name in before} == before


def test_export_to_a_sqlite_uri_into_one_experiment(tmp_path: Path, store: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = dt.experiment.plan(epochs=1).run(store=store, progress=False)
    second = dt.fan.plan(n=1).run(store=store, progress=False)
    exported = export(store.url, uri, experiment="team", runs=[first.id[:-1]])
    assert list(exported) == [first.id]
    client = MlflowClient(tracking_uri=uri)
    (run,) = _runs(client, "team", "tags.`mlflowkit.kind` = 'run'")
    assert run.info.run_id == exported[first.id] and run.data.metrics == first.metrics
    everything = export(store, uri, experiment="team")
    assert everything[first.id] == exported[first.id] and second.id in everything
    assert len(_runs(client, "team", "tags.`mlflowkit.kind` = 'run'")) == 2
    assert export(store, uri, experiment="team") == everything
    assert len(_runs(client, "team")) == 2 + 3 + 1


def test_an_export_cut_short_is_done_again(tmp_path: Path, store: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = dt.experiment.plan().run(store=store, progress=False)
    first = export(store, uri)[run.id]
    client = MlflowClient(tracking_uri=uri)
    client.delete_tag(first, "mlflowkit.exported")  # as if the export had stopped midway
    again = export(store, uri)[run.id]
    assert again != first
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    active = _runs(client, "experiment")
    assert len(active) == 4 and {r.data.tags["mlflowkit.run_id"] for r in active} == {run.id}


def test_the_command_line_exports(tmp_path: Path, store: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = dt.experiment.plan().run(store=store, progress=False)
    dt.fan.plan(n=1).run(store=store, progress=False)
    args = ["export", "mlflow", "--tracking-uri", uri, "--store", str(store.url)]
    result = CliRunner().invoke(main, [*args, run.id[:-2]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    mlflow_id = export(store, uri, runs=[run.id])[run.id]
    assert f"{run.id} -> {mlflow_id}" in result.output
    assert "1 run(s) in MLflow" in result.output
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "2 run(s) in MLflow" in result.output
    missing = CliRunner().invoke(main, ["export", "mlflow", "--store", str(store.url)])
    assert missing.exit_code == 2 and "--tracking-uri" in missing.output


def test_the_bridge_imports_mlflow_only_when_it_exports() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mlflowkit.integrations.mlflow, mlflowkit.cli\nprint('mlflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@mk.step
def weights(n: int) -> list[float]:
    mk.log_metric("size", n)
    return [float(i) for i in range(n)]


@mk.pipeline
def publishing(n: int = 2) -> list[float]:
    return mk.publish("vision/digits-model", weights(n), metadata={"n": n})


def test_published_versions_become_model_versions_and_stages_aliases(
    tmp_path: Path, store: Any
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = publishing.plan(n=2).run(store=store, progress=False)
    second = publishing.plan(n=3).run(store=store, progress=False)
    store.promote("vision/digits-model@1", to="poc")
    store.promote("vision/digits-model@1", to="prototype")
    store.promote("vision/digits-model@2", to="poc")
    exported = export(store, uri)
    client = MlflowClient(tracking_uri=uri)
    model = "vision.digits-model"  # MLflow model names allow no slash
    assert client.get_registered_model(model).tags == {"mlflowkit.name": "vision/digits-model"}
    versions = {
        mv.tags["mlflowkit.artifact_version"]: mv
        for mv in client.search_model_versions(f"name = '{model}'")
    }
    assert set(versions) == {"1", "2"}
    assert (
        versions["1"].run_id == exported[first.id] and versions["2"].run_id == exported[second.id]
    )
    assert versions["2"].tags["mlflowkit.digest"] == second.published["vision/digits-model"].digest
    aliases = {
        a: client.get_model_version_by_alias(model, a).tags["mlflowkit.artifact_version"]
        for a in ("poc", "prototype")
    }
    assert aliases == {"poc": "2", "prototype": "1"}
    # exporting again makes no new version; aliases follow the stages (a rollback here)
    store.promote("vision/digits-model@1", to="poc", reason="rollback")
    export(store, uri)
    assert len(client.search_model_versions(f"name = '{model}'")) == 2
    assert client.get_model_version_by_alias(model, "poc").tags["mlflowkit.artifact_version"] == "1"
