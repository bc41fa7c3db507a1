"""The tracking commands of the ``mlflowkit`` command line: ``runs compare``, ``export mlflow``.

Registered on the groups of :mod:`mlflowkit.cli` when it is imported (it imports this module
last). Same invariant as the rest of the command line: an error prints one clear message and
exits with status 1 (2 for a malformed command line); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import click

from mlflowkit.cli import _DEBUG_OPTION, _STORE_OPTION, _guard, _open, main, runs

__all__ = ["export", "export_mlflow", "runs_compare"]


@runs.command("compare")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--pipeline", default=None, metavar="NAME", help="Only the runs of this pipeline.")
@_STORE_OPTION
@_DEBUG_OPTION
def runs_compare(
    run_ids: tuple[str, ...], pipeline: str | None, store: str | None, debug: bool
) -> None:
    """Compare runs: one row per run with its parameters and metrics, oldest first.

    Without RUN_ID, every run of the store (of --pipeline NAME, when given); a unique prefix
    of a run id is enough. Each metric column is `<step>.<metric>`, the last value the step
    call logged with mk.log_metric; `store.metrics()` gives the same as a pandas DataFrame.
    """

    def go() -> None:
        from mlflowkit.tracking import print_comparison

        the_store = _open(store)
        records = [the_store.run(r) for r in run_ids] if run_ids else the_store.runs()
        title = f"runs of {pipeline}" if pipeline else "runs"
        if not print_comparison(records, pipeline, title=title):
            which = f" of pipeline {pipeline!r}" if pipeline else ""
            click.echo(f"no runs{which} in store {the_store.url}")

    _guard(debug, go)


@main.group(short_help="Export runs to other tools (MLflow).")
def export() -> None:
    """Export the runs of a store to other tools: `mlflowkit export mlflow`."""


@export.command("mlflow")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option(
    "--tracking-uri",
    required=True,
    metavar="URI",
    help="The MLflow tracking server (http://host:5000) or store (sqlite:///mlflow.db, a folder).",
)
@click.option(
    "--experiment",
    default=None,
    metavar="NAME",
    help="The MLflow experiment (default: one per pipeline, named after it).",
)
@_STORE_OPTION
@_DEBUG_OPTION
def export_mlflow(
    run_ids: tuple[str, ...],
    tracking_uri: str,
    experiment: str | None,
    store: str | None,
    debug: bool,
) -> None:
    """Export runs to MLflow: params, metrics with their history, tags, nested step runs.

    Without RUN_ID, every run of the store. Exporting again creates nothing new: runs already
    exported (found by their `mlflowkit.run_id` tag) are left as they are. Needs
    `pip install 'mlflowkit[mlflow]'`.
    """

    def go() -> None:
        from mlflowkit.integrations.mlflow import export as export_runs

        the_store = _open(store)
        ids = [the_store.run(r).id for r in run_ids] if run_ids else None
        exported = export_runs(the_store, tracking_uri, experiment=experiment, runs=ids)
        for run_id, mlflow_id in exported.items():
            click.echo(f"{run_id} -> {mlflow_id}")
        click.echo(f"{len(exported)} run(s) in MLflow at {tracking_uri}")

    _guard(debug, go)
