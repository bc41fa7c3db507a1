"""Metrics: logged inside a step, stored with the execution, compared across runs.

``mk.log_metric(name, value, step=None)`` and ``mk.log_metrics({name: value})`` append to the
running call's metric log, a slot of the step context (``stepcall.CURRENT_CALL``) created on the
first metric logged. When the call succeeds, the step call puts the log in the output's ``meta``
(``records.METRICS``): it is written with the cache entry and travels back with the result
from a worker process or a Dask worker, and the scheduler copies it into the call's
``StepRun.metric_log``. A cache hit therefore reports the metrics of the execution it reuses.

Invariants
----------
* A metric name is a non-empty ``str`` of at most ``MAX_NAME_LEN`` characters, made of
  letters, digits, ``_ - . /`` and spaces, that reads as a plain relative path (what MLflow
  accepts as a key: no ``/`` first or last, no ``//``, ``./`` or ``..``); a value is a
  finite real number (``bool`` is not one), kept as a ``float``; ``step`` is an ``int``
  (``bool`` is not one) in the 64-bit range. Anything else raises ``TrackingError`` naming
  the step call, the metric and the value.
* Nothing is half-recorded: ``log_metrics`` checks every pair before it records any; a call
  that fails (an exception, a wrong return type) keeps none of its metrics, and a retried call
  keeps only those of the attempt that succeeded.
* Outside a running step, logging raises ``TrackingError``, except in the body of a step called
  as a plain function (outside a pipeline, e.g. in a unit test): there the metric is checked
  and dropped, as nothing of a plain call is recorded.
* Nothing here imports pandas or matplotlib until a comparison or a chart is asked for.
"""

from __future__ import annotations

import math
import numbers
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import MlflowkitError, TrackingError
from mlflowkit.step import PLAIN_CALL
from mlflowkit.stepcall import CURRENT_CALL
from mlflowkit.wiring import short_repr

if TYPE_CHECKING:
    import pandas as pd

    from mlflowkit.records import RunRecord, StepRun

__all__ = [
    "MAX_NAME_LEN",
    "comparison",
    "comparison_table",
    "log_metric",
    "log_metrics",
    "metrics_frame",
    "plot_history",
    "plot_metric",
    "print_comparison",
    "run_metrics",
]

#: The longest metric name accepted (MLflow's limit for a metric key).
MAX_NAME_LEN = 250
_NAME = re.compile(r"[A-Za-z0-9_\-. /]+")
_STEP_MIN, _STEP_MAX = -(2**63), 2**63 - 1


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record a metric of the running step call.

    Parameters
    ----------
    name:
        The metric's name, e.g. ``"accuracy"``; it shows as ``"<step>.<name>"`` in
        ``run.metrics`` and in comparisons.
    value:
        A finite real number (``int``, ``float``, a NumPy scalar, ...); kept as a ``float``.
    step:
        The position of this value in the metric's history (an epoch, an iteration); when
        None, the number of values logged for this metric before it (0, 1, 2, ...).

    Raises
    ------
    TrackingError
        The name or value is not valid (see the module docstring), or no step is running.

    Examples
    --------
    >>> @mk.step
    ... def evaluate(model: Model, X: np.ndarray, y: np.ndarray) -> float:
    ...     accuracy = float((model.predict(X) == y).mean())
    ...     mk.log_metric("accuracy", accuracy)
    ...     return accuracy
    """
    frame = CURRENT_CALL.get()
    if frame is None:
        _check(_outside("log_metric", name, value), name, value, step)
        return
    point = _check(frame[0].name, name, value, step)
    log = frame[2]
    if log is None:
        log = frame[2] = {}
    _append(log, name, point)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Record several metrics of the running step call at once.

    Every pair is checked before any is recorded: a bad one raises and records none.

    Parameters
    ----------
    metrics:
        Metric name -> value, e.g. ``{"accuracy": 0.97, "f1": 0.95}``.
    step:
        As for :func:`log_metric`, for every metric given.

    Raises
    ------
    TrackingError
        ``metrics`` is not a mapping, a name or value is not valid, or no step is running.
    """
    frame = CURRENT_CALL.get()
    where = frame[0].name if frame is not None else None
    if not isinstance(metrics, Mapping):
        raise TrackingError(
            f"{_who(where)}mk.log_metrics() expected a mapping of metric names to values, "
            f"found {type(metrics).__name__} {short_repr(metrics)}. Pass e.g. "
            f'mk.log_metrics({{"accuracy": 0.97}}), or call mk.log_metric(name, value).',
            step=where,
            value=metrics,
        )
    if frame is None:
        where = _outside("log_metrics", next(iter(metrics), None), metrics)
    points = [(name, _check(where, name, value, step)) for name, value in metrics.items()]
    if frame is None:
        return
    log = frame[2]
    if log is None:
        log = frame[2] = {}
    for name, point in points:
        _append(log, name, point)


def _append(log: dict[str, list[list[float]]], name: str, point: tuple[int | None, float]) -> None:
    step, value = point
    points = log.get(name)
    if points is None:
        log[name] = [[0 if step is None else step, value]]
    else:
        points.append([len(points) if step is None else step, value])


def _who(step: str | None) -> str:
    return f"Step {step!r}: " if step is not None else ""


def _outside(function: str, name: Any, value: Any) -> str:
    """The name of the step called as a plain function, else raise: no step is running."""
    plain = PLAIN_CALL.get()
    if plain is not None:
        return plain.name
    raise TrackingError(
        f"mk.{function}({short_repr(name)}, ...) was called outside a running step: expected "
        f"to be inside a step executed by a run, found none. Call it from a step function "
        f"during plan.run() (a thread the step starts must run in the step's context: "
        f"contextvars.copy_context().run(...)).",
        metric=name,
        value=value,
    )


def _check(where: str | None, name: Any, value: Any, step: Any) -> tuple[int | None, float]:
    """``(step, value as float)`` for a valid metric; else raise ``TrackingError``."""
    if type(name) is not str or not (
        0 < len(name) <= MAX_NAME_LEN
        and _NAME.fullmatch(name)
        and posixpath.normpath(name) == name  # no "/" last, no "//", "./" or "a/.."
        and not name.startswith(("/", ".."))
        and name != "."
    ):
        found = f"{type(name).__name__} {short_repr(name)}"
        if type(name) is str and len(name) > MAX_NAME_LEN:
            found += f" ({len(name)} characters)"
        raise TrackingError(
            f"{_who(where)}metric name {short_repr(name)} (value {short_repr(value)}): expected "
            f"a str of 1 to {MAX_NAME_LEN} letters, digits, '_', '-', '.', '/' or spaces that "
            f"reads as a plain relative path (no '/' first or last, no '//', './' or '..'), "
            f"found {found}. Rename the metric, e.g. 'val_accuracy' or 'val/accuracy'.",
            step=where,
            metric=name,
            value=value,
        )
    kind = type(value)
    number: float | None = None
    what = "not a real number"
    if kind is float:
        number = value
    elif kind is not bool and isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:
            what = "too large for a 64-bit float"
        except (TypeError, ValueError):
            pass
    if number is None or not math.isfinite(number):
        if number is not None:
            what = "not finite"
        raise TrackingError(
            f"{_who(where)}metric {name!r} = {short_repr(value)}: expected a finite real number "
            f"(int, float or a NumPy scalar), found {kind.__name__} {short_repr(value)} "
            f"({what}). Log finite numbers only: convert it (float(x), x.item()) or leave "
            f"the value out.",
            step=where,
            metric=name,
            value=value,
        )
    if step is not None and (
        type(step) is bool
        or not isinstance(step, numbers.Integral)
        or not _STEP_MIN <= int(step) <= _STEP_MAX
    ):
        raise TrackingError(
            f"{_who(where)}metric {name!r} = {short_repr(value)}: expected step= to be an int "
            f"(64-bit) or None, found {type(step).__name__} {short_repr(step)}. Pass the "
            f"epoch or iteration number as an int.",
            step=where,
            metric=name,
            value=value,
        )
    return (None if step is None else int(step)), number


# ---------------------------------------------------------------------------------------------
def run_metrics(steps: Iterable[StepRun]) -> dict[str, float]:
    """``{"<step>.<metric>": last value}`` of the step calls' metrics, in the calls' order."""
    out: dict[str, float] = {}
    for s in steps:
        if s.metric_log:
            for name, points in s.metric_log.items():
                out[f"{s.name}.{name}"] = points[-1][1]
    return out


_BASE_COLUMNS = ("run_id", "pipeline", "status", "started_at")


def comparison(
    records: Iterable[RunRecord], pipeline: str | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of a comparison of runs, as plain values (no pandas).

    One row per run, oldest first: ``run_id``, ``pipeline``, ``status``, ``started_at``
    (seconds since the epoch), a ``param.<name>`` per pipeline parameter and a
    ``<step>.<metric>`` per metric (the last value logged), columns in the order first met.
    A row lacks the keys of the parameters and metrics its run does not have.

    Parameters
    ----------
    records:
        Run records, e.g. ``store.runs()``.
    pipeline:
        Keep only the runs of this pipeline.
    """
    chosen = sorted(
        (r for r in records if pipeline is None or r.pipeline == pipeline),
        key=lambda r: (r.started_at, r.id),
    )
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    rows = []
    for r in chosen:
        row: dict[str, Any] = {
            "run_id": r.id,
            "pipeline": r.pipeline,
            "status": r.status,
            "started_at": r.started_at,
        }
        for name, value in r.params.items():
            params.setdefault(f"param.{name}")
            row[f"param.{name}"] = value
        for column, value in run_metrics(r.steps).items():
            metrics.setdefault(column)
            row[column] = value
        rows.append(row)
    return [*_BASE_COLUMNS, *params, *metrics], rows


def metrics_frame(records: Iterable[RunRecord], pipeline: str | None = None) -> pd.DataFrame:
    """One row per run, oldest first, to compare experiments (``store.metrics()``).

    The columns of :func:`comparison`, with ``started_at`` as UTC timestamps and each metric
    column as ``float64``; a run without a parameter or metric has a missing value there.
    """
    import pandas as pd

    columns, rows = comparison(records, pipeline)
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["started_at"] = pd.to_datetime(frame["started_at"], unit="s", utc=True)
    for column in columns:
        if not column.startswith("param.") and column not in _BASE_COLUMNS:
            frame[column] = frame[column].astype("float64")
    return frame


def comparison_table(
    records: Iterable[RunRecord], pipeline: str | None = None, *, title: str = "runs"
) -> Any:
    """The comparison of runs as a ``rich`` table (``mlflowkit runs compare`` prints it).

    Times are shown in UTC to the second, metrics with 4 significant digits, a missing
    parameter or metric as ``-``.
    """
    import time

    from rich.table import Table

    columns, rows = comparison(records, pipeline)
    if pipeline is not None:  # one pipeline: its column says nothing
        columns.remove("pipeline")
    table = Table(title=title)
    for column in columns:
        numeric = column not in _BASE_COLUMNS and not column.startswith("param.")
        header = column.replace(".", ".\n", 1)  # "evaluate[0].\naccuracy": narrower columns
        table.add_column(header, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "started_at":
                cells.append(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)))
            elif value is None and column not in row:
                cells.append("-")
            elif type(value) is float:
                cells.append(f"{value:.4g}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def print_comparison(
    records: Iterable[RunRecord], pipeline: str | None = None, *, title: str = "runs"
) -> int:
    """Print :func:`comparison_table` to stdout; return how many runs it shows (none: no
    table is printed).

    On a terminal the table fits its width (long cells fold); elsewhere (a pipe, a file) it
    is as wide as its content, so that nothing folds.
    """
    import sys

    from rich.console import Console

    table = comparison_table(records, pipeline, title=title)
    if not table.row_count:
        return 0
    if sys.stdout.isatty():
        Console().print(table)
    else:
        widths = [max(map(len, str(c.header).splitlines()), default=0) for c in table.columns]
        for i, column in enumerate(table.columns):
            for cell in column.cells:
                widths[i] = max(widths[i], len(str(cell)))
        Console(width=sum(widths) + 3 * len(widths) + 1).print(table)
    return int(table.row_count)


def _pyplot_ready() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MlflowkitError(
            "Charts of metrics need matplotlib, which is not installed: expected it to be "
            "importable, found none. Install the plotting extra: pip install 'mlflowkit[plot]'."
        ) from exc


def plot_metric(source: Any, metric: str, *, pipeline: str | None = None, ax: Any = None) -> Any:
    """A chart of one metric across runs (pandas' plotting, on matplotlib).

    Parameters
    ----------
    source:
        A store (its ``metrics(pipeline)`` is charted) or a frame from ``store.metrics()``.
    metric:
        The column to chart, ``"<step>.<metric>"``.
    pipeline:
        With a store: only the runs of this pipeline.
    ax:
        A matplotlib ``Axes`` to draw on (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
        One point per run that logged the metric, in the order the runs started.

    Raises
    ------
    MlflowkitError
        matplotlib is not installed (``pip install 'mlflowkit[plot]'``), or no run has that
        metric (the message lists those there are).
    """
    _pyplot_ready()
    frame = source.metrics(pipeline) if hasattr(source, "metrics") else source
    if metric not in frame.columns:
        known = [c for c in frame.columns if c not in _BASE_COLUMNS and not c.startswith("param.")]
        raise MlflowkitError(
            f"no run has a metric {metric!r}: expected a '<step>.<metric>' column, found "
            f"{known}. Log it in the step with mk.log_metric(), or pick one of those."
        )
    shown = frame[frame[metric].notna()]
    return shown.plot(x="run_id", y=metric, marker="o", rot=30, ax=ax, title=metric, legend=False)


def plot_history(step_run: StepRun, metric: str, *, ax: Any = None) -> Any:
    """A chart of every value one step call logged for ``metric``, by step.

    Returns
    -------
    matplotlib.axes.Axes
        The history as a line (``step`` on the x axis).
    """
    _pyplot_ready()
    import pandas as pd

    history = pd.DataFrame(step_run.metric_history(metric), columns=["step", metric])
    return history.plot(x="step", y=metric, ax=ax, title=f"{step_run.name}.{metric}", legend=False)
