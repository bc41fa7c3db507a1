"""The ``mlflowkit`` command line, built on the public API only.

Invariant: a user error prints one clear message (what, where, how to fix) and exits 2;
``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import mlflowkit as mk
from mlflowkit.wiring import check_value, describe

__all__ = ["main"]


def _fail(message: str) -> typing.NoReturn:
    raise click.ClickException(message)


def load_pipeline(target: str) -> mk.Pipeline[Any, Any]:
    """Load ``FILE.py:NAME`` or ``package.module:NAME`` and return the pipeline."""
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        _fail(f"expected FILE_OR_MODULE:PIPELINE (e.g. examples/digits.py:train), found {target!r}")
    if source.endswith(".py") or os.path.exists(source):
        path = Path(source).resolve()
        if not path.exists():
            _fail(f"file {source!r} does not exist (from {target!r}); check the path")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            _fail(f"cannot load {source!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            _fail(f"cannot import module {source!r}: {exc}. Give a file path or a module name")
    obj = getattr(module, attr, None)
    if obj is None:
        found = sorted(n for n, v in vars(module).items() if isinstance(v, mk.Pipeline))
        _fail(f"{source!r} has no attribute {attr!r}; pipelines defined there: {found}")
    if not isinstance(obj, mk.Pipeline):
        _fail(f"{target!r} is a {type(obj).__name__}, expected a function decorated @mk.pipeline")
    return obj


def _parse_value(raw: str, hint: Any, name: str) -> Any:
    if hint is str:
        return raw
    if hint is bool or hint == bool | None:
        lowered = raw.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is not None and not check_value(value, hint):
        _fail(f"parameter {name!r}: expected {describe(hint)}, found {raw!r}")
    return value


def parse_params(pipe: mk.Pipeline[Any, Any], params: tuple[str, ...]) -> dict[str, Any]:
    """Parse ``name=value`` pairs against the pipeline's annotations."""
    sig = pipe.__signature__
    try:
        hints = typing.get_type_hints(pipe.fn)
    except Exception:
        hints = {}
    out: dict[str, Any] = {}
    for item in params:
        name, sep, raw = item.partition("=")
        if not sep:
            _fail(f"expected -p name=value, found {item!r}")
        if name not in sig.parameters:
            _fail(
                f"pipeline {pipe.name!r} has no parameter {name!r}; its parameters are "
                f"{list(sig.parameters)}"
            )
        out[name] = _parse_value(raw, hints.get(name), name)
    return out


def _guard(debug: bool, fn: Callable[[], None]) -> None:
    try:
        fn()
    except mk.MlflowkitError as exc:
        if debug:
            raise
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mk.__version__, prog_name="mlflowkit")
def main() -> None:
    """mlflowkit: typed, cached, reproducible ML pipelines."""


@main.command()
@click.argument("target")
@click.option("-p", "--param", "params", multiple=True, help="Pipeline parameter name=value.")
@click.option("--executor", default="local", show_default=True, help="Executor name.")
@click.option("--store", default=None, help="Store URL (default $MLFLOWKIT_STORE or ./.mlflowkit).")
@click.option("--force", is_flag=True, help="Re-execute every step despite the cache.")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def run(
    target: str,
    params: tuple[str, ...],
    executor: str,
    store: str | None,
    force: bool,
    progress: bool | None,
    debug: bool,
) -> None:
    """Run a pipeline: TARGET is FILE.py:PIPELINE or package.module:PIPELINE."""

    def go() -> None:
        pipe = load_pipeline(target)
        values = parse_params(pipe, params)
        the_store = mk.Store(store) if store else mk.Store()
        result = pipe.plan(**values).run(
            executor=executor, store=the_store, force=force, progress=progress
        )
        executed = sum(s.status == "executed" for s in result.steps)
        cached = sum(s.status == "cached" for s in result.steps)
        click.echo(f"run {result.id} {result.status}: {executed} executed, {cached} cached")
        click.echo(f"output: {result.output!r}")
        click.echo(f"store: {the_store.url}  (mlflowkit runs show {result.id})")

    _guard(debug, go)


@main.command()
@click.argument("target")
@click.option("-p", "--param", "params", multiple=True, help="Pipeline parameter name=value.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--explain", "explain_", is_flag=True, help="Say for each step: cache hit or execute, and why."
)
@click.option("--store", default=None, help="Store URL for --explain.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def plan(
    target: str, params: tuple[str, ...], fmt: str, explain_: bool, store: str | None, debug: bool
) -> None:
    """Show the plan of a pipeline without running it."""

    def go() -> None:
        pipe = load_pipeline(target)
        the_plan = pipe.plan(**parse_params(pipe, params))
        if explain_:
            click.echo(str(the_plan.explain(mk.Store(store) if store else None)))
        elif fmt == "mermaid":
            click.echo(the_plan.to_mermaid(), nl=False)
        elif fmt == "dot":
            click.echo(the_plan.to_dot(), nl=False)
        else:
            for name in the_plan.steps:
                node = the_plan.nodes[name]
                after = f"  <- {', '.join(node.deps)}" if node.deps else ""
                click.echo(f"{name}{after}")

    _guard(debug, go)


def _open(store: str | None) -> Any:
    return mk.Store(store) if store else mk.Store()


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, len(" ".join(columns)) + 20)).print(table)


_STORE_OPTION = click.option(
    "--store", default=None, help="Store URL (default $MLFLOWKIT_STORE or ./.mlflowkit)."
)
_DEBUG_OPTION = click.option("--debug", is_flag=True, help="Show full tracebacks.")


@main.group()
def runs() -> None:
    """List and show run records."""


@runs.command("list")
@_STORE_OPTION
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs to show.")
@_DEBUG_OPTION
def runs_list(store: str | None, limit: int, debug: bool) -> None:
    """The most recent runs, newest first."""

    def go() -> None:
        import time as _time

        rows = []
        for rec in _open(store).runs()[:limit]:
            executed = sum(s.status == "executed" for s in rec.steps)
            cached = sum(s.status == "cached" for s in rec.steps)
            when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(rec.started_at))
            rows.append(
                [rec.id, rec.pipeline, rec.status, when, f"{executed} run / {cached} cached"]
            )
        _table("runs", ["id", "pipeline", "status", "started", "steps"], rows)

    _guard(debug, go)


@runs.command("show")
@click.argument("run_id")
@_STORE_OPTION
@_DEBUG_OPTION
def runs_show(run_id: str, store: str | None, debug: bool) -> None:
    """Steps, statuses and digests of one run (a unique id prefix is enough)."""

    def go() -> None:
        rec = _open(store).run(run_id)
        click.echo(f"run {rec.id}  pipeline {rec.pipeline}  {rec.status}  params {rec.params}")
        env = rec.environment
        click.echo(
            f"python {env.get('python')}  mlflowkit {env.get('mlflowkit')}  "
            f"git {env.get('git_commit') or '-'}"
        )
        rows = [
            [
                s.name,
                s.status,
                str(s.attempts),
                f"{s.duration_s * 1000:.1f} ms",
                (s.output_digest or "")[:16],
                s.error or "",
            ]
            for s in rec.steps
        ]
        _table(
            f"steps of {rec.id}",
            ["step", "status", "attempts", "duration", "output", "error"],
            rows,
        )

    _guard(debug, go)


@main.command()
@click.argument("digest")
@_STORE_OPTION
@_DEBUG_OPTION
def lineage(digest: str, store: str | None, debug: bool) -> None:
    """Everything upstream of an artifact: the steps and runs that made it."""

    def go() -> None:
        graph = _open(store).lineage(digest)
        for node, data in graph.nodes(data=True):
            kind = data.get("kind", "?")
            preds = ", ".join(str(p) for p in graph.predecessors(node))
            click.echo(f"{kind:<8} {node}" + (f"  <- {preds}" if preds else ""))

    _guard(debug, go)


@main.group("store")
def store_group() -> None:
    """Check, clean and measure the artifact store."""


@store_group.command("verify")
@_STORE_OPTION
@_DEBUG_OPTION
def store_verify(store: str | None, debug: bool) -> None:
    """Re-hash every stored object; set aside and list the corrupt ones."""

    def go() -> None:
        bad = _open(store).verify()
        if bad:
            for digest in bad:
                click.echo(f"corrupt: {digest}")
            raise click.ClickException(
                f"{len(bad)} corrupt object(s) set aside; the steps that made them re-execute "
                f"on the next run"
            )
        click.echo("all objects verified")

    _guard(debug, go)


@store_group.command("gc")
@_STORE_OPTION
@click.option("--keep-last", default=10, show_default=True, help="Keep what the last N runs use.")
@click.option("--pin", "pins", multiple=True, help="A digest to keep (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@_DEBUG_OPTION
def store_gc(
    store: str | None, keep_last: int, pins: tuple[str, ...], dry_run: bool, debug: bool
) -> None:
    """Delete objects and cache entries that neither recent runs nor pins use."""

    def go() -> None:
        summary = _open(store).gc(keep_last=keep_last, pins=list(pins), dry_run=dry_run)
        click.echo(str(summary))

    _guard(debug, go)


@store_group.command("du")
@_STORE_OPTION
@_DEBUG_OPTION
def store_du(store: str | None, debug: bool) -> None:
    """Disk usage of the store by area."""

    def go() -> None:
        usage = _open(store).du()
        click.echo(json.dumps(usage, indent=2, default=str))

    _guard(debug, go)


@main.command()
def executors() -> None:
    """List the executors that can be used here."""
    for name in mk.executors.available():
        click.echo(name)


def cli_main() -> None:  # pragma: no cover - console entry point alias
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
