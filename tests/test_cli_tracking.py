"""The tracking commands: ``mlflowkit runs compare`` (and ``export mlflow``, with MLflow)."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from mlflowkit.cli import main
from tests.resources import dag_tracking as dt


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_runs_compare_prints_params_and_metrics_per_run(store: Any) -> None:
    first = dt.experiment.plan(epochs=2).run(store=store, progress=False)
    second = dt.experiment.plan(epochs=3).run(store=store, progress=False)
    fanned = dt.fan.plan(n=1).run(store=store, progress=False)
    result = _cli("runs", "compare", "--store", str(store.url))
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (first.id, second.id, fanned.id, "param.", "epochs", "evaluate.", "accuracy"):
        assert text in out
    lines = out.splitlines()
    row = next(line for line in lines if first.id in line)
    assert "0.875" in row and "0.25" in row and "experiment" in row
    assert lines.index(row) < lines.index(next(line for line in lines if second.id in line))
    # a pipeline: only its runs, without the pipeline column
    out = _cli("runs", "compare", "--pipeline", "experiment", "--store", str(store.url)).output
    assert first.id in out and second.id in out and fanned.id not in out
    assert "pipeline" not in out.split(first.id)[0].replace("runs of experiment", "")
    # chosen runs, by unique prefixes of their ids
    out = _cli("runs", "compare", second.id[:-2], fanned.id, "--store", str(store.url)).output
    assert second.id in out and fanned.id in out and first.id not in out
    assert "where[0]." in out


def test_runs_compare_says_when_there_is_nothing_to_compare(store: Any) -> None:
    store.create()  # an empty store (reading a folder that is no store is an error)
    out = _cli("runs", "compare", "--pipeline", "nope", "--store", str(store.url)).output
    assert out.strip() == f"no runs of pipeline 'nope' in store {store.url}"
    result = CliRunner().invoke(main, ["runs", "compare", "zzz", "--store", str(store.url)])
    assert result.exit_code == 1 and "no run 'zzz'" in result.output
