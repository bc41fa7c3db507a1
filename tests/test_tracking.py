"""Metrics logged in steps: recorded with the execution, reported by cache hits, compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from tests.resources import dag_tracking as dt

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "train.loss": 0.125,
    "train.final_loss": 0.125,
    "train.epochs": 3.0,
    "evaluate.accuracy": 0.9375,
}


def _run(pipe: Any, store: Any, executor: str = "local", **params: Any) -> mk.Run:
    return pipe.plan(**params).run(executor=executor, store=store, progress=False)


def test_metrics_are_recorded_per_step_and_per_run(store: Any) -> None:
    run = _run(dt.experiment, store)
    assert run.metrics == EXPECTED
    train = run.step("train")
    assert train.metrics == {"loss": 0.125, "final_loss": 0.125, "epochs": 3.0}
    assert train.metric_history("loss") == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert train.metric_history("epochs") == [(0, 3.0)]
    assert run.step("quiet").metrics == {} and run.step("quiet").metric_log is None
    assert all(type(v) is float for v in run.metrics.values())
    with pytest.raises(KeyError, match=r"logged no metric 'nope'.*'epochs'"):
        train.metric_history("nope")
    # the record in the store says the same
    record = store.run(run.id)
    assert mk.Run(record, store).metrics == EXPECTED
    assert record.steps[0].metric_history("loss") == train.metric_history("loss")


def test_a_forced_execution_replaces_the_metrics_a_hit_reports(store: Any) -> None:
    first = _run(dt.stamped, store)
    forced = dt.stamped.plan().run(store=store, progress=False, force=["stamp"])
    assert forced.step("stamp").status == "executed"
    assert forced.metrics != first.metrics  # the same output, logged again
    again = _run(dt.stamped, store)  # a hit, from the cache pack
    assert again.step("stamp").cached and again.metrics == forced.metrics
    store.drop_packs()
    assert _run(dt.stamped, store).metrics == forced.metrics  # and from the cache entry


def test_a_value_logged_without_step_counts_its_position(store: Any) -> None:
    run = _run(dt.lots, store, n=3)
    assert run.step("many").metric_history("value") == [(0, 0.0), (1, 0.5), (2, 1.0)]


def test_a_cache_hit_reports_the_metrics_of_the_execution_it_reuses(store: Any) -> None:
    first = _run(dt.fan, store, n=3)
    pids = {first.metrics[f"where[{i}].pid"] for i in range(3)}
    assert pids == {float(os.getpid())}
    again = _run(dt.fan, store, n=3)  # the cache pack this time
    assert [s.status for s in again.steps if not s.internal] == ["cached"] * 3
    assert again.metrics == first.metrics
    # a fresh process: hits read from the store's files, metrics from the entries it reuses
    code = (
        "import json, sys\n"
        "import mlflowkit as mk\n"
        "from tests.resources import dag_tracking as dt\n"
        f"run = dt.fan.plan(n=3).run(store=mk.Store({str(store.url)!r}), progress=False)\n"
        "print(json.dumps([[s.status for s in run.steps], run.metrics]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    statuses, metrics = json.loads(out.stdout)
    assert set(statuses) == {"cached"}
    assert metrics == first.metrics


def test_a_cache_hit_without_the_pack_still_reports_metrics(store: Any) -> None:
    first = _run(dt.experiment, store)
    store.drop_packs()  # only the cache entries are left
    again = _run(dt.experiment, store)
    assert {s.status for s in again.steps} == {"cached"}
    assert again.metrics == first.metrics == EXPECTED
    assert again.step("train").metric_history("loss") == [(0, 0.5), (1, 0.25), (2, 0.125)]


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_metrics_travel_back_from_other_executors(store: Any, executor: str) -> None:
    run = _run(dt.experiment, store, executor)
    assert run.metrics == EXPECTED
    assert run.step("train").metric_history("loss") == [(0, 0.5), (1, 0.25), (2, 0.125)]
    fanned = _run(dt.fan, store, executor, n=4)
    assert {fanned.metrics[f"where[{i}].x"] for i in range(4)} == {0.0, 1.0, 2.0, 3.0}
    if executor == "processes":  # each call logged the pid of the worker that executed it
        assert float(os.getpid()) not in {fanned.metrics[f"where[{i}].pid"] for i in range(4)}
    # and a hit on another executor reports them as they were logged
    local = _run(dt.fan, store, "local", n=4)
    assert {s.status for s in local.steps if not s.internal} == {"cached"}
    assert local.metrics == fanned.metrics


def test_ten_thousand_values_from_one_step_cost_less_than_a_second(store: Any) -> None:
    t0 = time.perf_counter()
    run = _run(dt.lots, store, n=10_000)
    whole = time.perf_counter() - t0
    logging_s = run.output
    assert logging_s < 1.0, f"logging 10,000 values took {logging_s:.3f} s"
    assert whole < 10.0, f"the run took {whole:.3f} s"
    history = run.step("many").metric_history("value")
    assert len(history) == 10_000 and history[-1] == (9999, 4999.5)
    again = _run(dt.lots, store, n=10_000)
    assert again.step("many").cached
    assert again.step("many").metric_history("value") == history


@pytest.mark.parametrize("kind", sorted(dt.BAD_VALUES))
def test_a_bad_value_fails_the_step_naming_it(store: Any, kind: str) -> None:
    with pytest.raises(mk.RunFailed) as info:
        _run(dt.bad, store, what="value", kind=kind)
    err = info.value.__cause__
    assert isinstance(err, mk.TrackingError)
    assert err.step == "bad_value" and err.metric == "m"
    text = str(err)
    assert "Step 'bad_value'" in text and "metric 'm'" in text
    assert "expected a finite real number" in text
    assert info.value.run.step("bad_value").status == "failed"
    assert info.value.run.metrics == {}  # what it logged before the error is not kept


@pytest.mark.parametrize("kind", sorted(dt.BAD_NAMES))
def test_a_bad_name_fails_the_step_naming_it(store: Any, kind: str) -> None:
    with pytest.raises(mk.RunFailed) as info:
        _run(dt.bad, store, what="name", kind=kind)
    err = info.value.__cause__
    assert isinstance(err, mk.TrackingError)
    assert err.step == "bad_name" and err.metric == dt.BAD_NAMES[kind] and err.value == 1.0
    assert "Step 'bad_name': metric name" in str(err) and "expected a str" in str(err)


@pytest.mark.parametrize("kind", sorted(dt.BAD_STEPS))
def test_a_bad_step_number_fails_the_step_naming_it(store: Any, kind: str) -> None:
    with pytest.raises(mk.RunFailed) as info:
        _run(dt.bad, store, what="step", kind=kind)
    err = info.value.__cause__
    assert isinstance(err, mk.TrackingError) and err.step == "bad_step"
    assert "expected step= to be an int" in str(err)


def test_log_metrics_records_nothing_when_one_pair_is_bad(store: Any) -> None:
    run = _run(dt.half, store)
    assert run.metrics == {"half_recorded.kept": 1.0, "half_recorded.caught": 1.0}


def test_a_retried_step_keeps_the_metrics_of_the_attempt_that_succeeded(
    store: Any, tmp_path: Path
) -> None:
    run = _run(dt.retried, store, marker_dir=str(tmp_path))
    assert run.step("flaky").attempts == 2
    assert run.metrics == {"flaky.attempt_two": 2.0}


def test_a_step_failing_after_logging_records_no_metrics(store: Any) -> None:
    with pytest.raises(mk.RunFailed) as info:
        _run(dt.mistyped, store)
    assert info.value.run.step("wrong_type").metric_log is None


def test_an_uncached_step_records_its_metrics_each_run(store: Any) -> None:
    assert _run(dt.uncached, store, x=1).metrics == {"side_effect.x": 1.0}
    again = _run(dt.uncached, store, x=1)
    assert again.step("side_effect").status == "executed"
    assert again.metrics == {"side_effect.x": 1.0}


def test_logging_outside_a_step_is_an_error() -> None:
    with pytest.raises(mk.TrackingError, match=r"mk.log_metric\('loss', \.\.\.\) was called "):
        mk.log_metric("loss", 0.5)
    with pytest.raises(mk.TrackingError, match="outside a running step"):
        mk.log_metrics({"loss": 0.5})
    with pytest.raises(mk.TrackingError, match="expected a mapping"):
        mk.log_metrics([("loss", 0.5)])  # type: ignore[arg-type]


def test_a_step_called_as_a_plain_function_checks_and_drops_its_metrics() -> None:
    assert dt.train(2, 0.5) == 0.25  # a unit test of user code stays trivial
    assert dt.evaluate(0.5) == 0.75
    with pytest.raises(mk.TrackingError, match=r"Step 'bad_value': metric 'm' = nan"):
        dt.bad_value("nan")


def test_the_step_context_still_works_beside_metrics(store: Any) -> None:
    @mk.step
    def ctx() -> str:
        mk.log_metric("one", 1)
        return mk.current().name

    @mk.pipeline
    def p() -> str:
        return ctx()

    run = p.plan().run(store=store, progress=False)
    assert run.output == "ctx" and run.metrics == {"ctx.one": 1.0}


def test_running_and_reading_metrics_does_not_import_pandas(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import mlflowkit as mk\n"
        "from tests.resources import dag_tracking as dt\n"
        f"run = dt.experiment.plan().run(store=mk.Store({str(tmp_path / 's')!r}), "
        "progress=False)\n"
        "assert run.metrics and run.step('train').metric_history('loss')\n"
        "print(json.dumps('pandas' in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert json.loads(out.stdout) is False


# --- comparing runs ---------------------------------------------------------------------------
def test_store_metrics_is_one_row_per_run(store: Any) -> None:
    import pandas as pd

    store.create()  # an empty store (reading a folder that is no store is an error)
    assert list(store.metrics().columns) == ["run_id", "pipeline", "status", "started_at"]
    first = _run(dt.experiment, store, epochs=2, alpha=0.5)
    second = _run(dt.experiment, store, epochs=3, alpha=0.5)
    other = _run(dt.fan, store, n=1)
    frame = store.metrics()
    assert list(frame["run_id"]) == [first.id, second.id, other.id]  # oldest first
    assert set(frame.columns) == {
        "run_id",
        "pipeline",
        "status",
        "started_at",
        "param.epochs",
        "param.alpha",
        "param.n",
        "train.loss",
        "train.final_loss",
        "train.epochs",
        "evaluate.accuracy",
        "where[0].pid",
        "where[0].x",
    }
    assert str(frame["started_at"].dtype).startswith("datetime64") and frame["started_at"].dt.tz
    assert frame["started_at"].iloc[0] == pd.Timestamp(first.record.started_at, unit="s", tz="UTC")
    assert frame["train.loss"].dtype == "float64"
    exp = store.metrics("experiment")
    assert list(exp["run_id"]) == [first.id, second.id]
    assert list(exp["param.epochs"]) == [2, 3]
    assert list(exp["train.loss"]) == [0.25, 0.125]
    assert list(exp["evaluate.accuracy"]) == [0.875, 0.9375]
    assert set(exp["status"]) == {"succeeded"} and set(exp["pipeline"]) == {"experiment"}
    assert pd.isna(frame.loc[2, "train.loss"]) and pd.isna(frame.loc[0, "where[0].x"])


def test_a_metric_across_runs_charts_with_matplotlib(store: Any) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlflowkit.tracking import plot_history, plot_metric

    for epochs in (1, 2, 3):
        run = _run(dt.experiment, store, epochs=epochs)
    ax = plot_metric(store, "evaluate.accuracy", pipeline="experiment")
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == [0.75, 0.875, 0.9375]
    assert ax.get_title() == "evaluate.accuracy"
    ax = plot_history(run.step("train"), "loss")
    assert list(ax.get_lines()[0].get_ydata()) == [0.5, 0.25, 0.125]
    with pytest.raises(mk.MlflowkitError, match=r"no run has a metric 'nope'.*evaluate.accuracy"):
        plot_metric(store.metrics(), "nope")
    plt.close("all")


def test_a_run_renders_its_metrics_in_a_notebook(store: Any) -> None:
    html = _run(dt.experiment, store)._repr_html_()
    assert ">metrics</th>" in html
    assert "accuracy=0.9375" in html and "loss=0.125" in html
    assert ">metrics</th>" not in _run(dt.lots, store, n=0)._repr_html_()  # nothing logged


def test_the_digits_example_logs_accuracies_and_prints_the_comparison(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOWKIT_STORE": str(tmp_path / "s")}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "digits.py")],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env=env,
        ).stdout
    assert "runs of digits" in out and "evaluate[0]." in out and "best_accuracy" in out
    frame = mk.Store(str(tmp_path / "s")).metrics("digits")
    assert len(frame) == 2
    accuracies = frame[[f"evaluate[{i}].accuracy" for i in range(5)]]
    assert (accuracies.iloc[0] == accuracies.iloc[1]).all()  # the cached run reports the same
    assert ((accuracies > 0.9) & (accuracies <= 1.0)).all().all()
    assert (frame["pick_best.best_accuracy"] == accuracies.max(axis=1)).all()
