"""The commands that plan and run pipelines: ``run``, ``plan`` and ``executors``.

A pipeline is named as ``FILE.py:PIPELINE`` or ``package.module:PIPELINE``; its parameters
come as ``-p name=value``, parsed as JSON where they can be and checked against the
pipeline's annotations before anything runs (a mismatch is a malformed command line, status 2).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

import click

import mlflowkit as mk
from mlflowkit.cli.common import (
    OUTPUT_LIMIT,
    UserCodeError,
    fail,
    guard,
    ranges,
    short_repr,
)
from mlflowkit.records import count_calls, describe_calls, output_digests
from mlflowkit.wiring import check_value, describe

__all__ = ["executors", "load_pipeline", "parse_params", "plan", "run"]


def load_pipeline(target: str) -> mk.Pipeline[Any, Any]:
    """Load ``FILE.py:NAME`` or ``package.module:NAME`` and return the pipeline."""
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        fail(f"expected FILE_OR_MODULE:PIPELINE (e.g. examples/digits.py:digits), found {target!r}")
    if source.endswith(".py") or os.path.exists(source):
        path = Path(source).resolve()
        if not path.exists():
            fail(f"file {source!r} does not exist (from {target!r}); check the path")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            fail(f"cannot load {source!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UserCodeError(f"importing {source!r} failed", exc) from exc
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError as exc:
            if exc.name and source.startswith(exc.name):
                fail(
                    f"cannot import module {source!r}: {exc}. Give a file path (e.g. "
                    f"pipelines.py:train) or an importable module name"
                )
            raise UserCodeError(f"importing {source!r} failed", exc) from exc
        except Exception as exc:
            raise UserCodeError(f"importing {source!r} failed", exc) from exc
    obj = getattr(module, attr, None)
    if obj is None:
        found = sorted(n for n, v in vars(module).items() if isinstance(v, mk.Pipeline))
        fail(f"{source!r} has no attribute {attr!r}; pipelines defined there: {found}")
    if not isinstance(obj, mk.Pipeline):
        fail(f"{target!r} is a {type(obj).__name__}, expected a function decorated @mk.pipeline")
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
        example = {int: "3", float: "0.5", bool: "true", str: "text"}.get(hint, "<JSON value>")
        _bad_param(
            f"parameter {name!r}: expected {describe(hint)}, found {raw!r} (in -p {name}={raw}). "
            f"Pass e.g. -p {name}={example}; values are parsed as JSON"
        )
    return value


def _bad_param(message: str) -> typing.NoReturn:
    """A ``-p`` that does not fit the pipeline: a malformed command line (exit status 2)."""
    raise click.BadParameter(message, param_hint="'-p' / '--param'")


def _check_param_syntax(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """Each ``-p`` is ``name=value``; checked before the pipeline's file is loaded."""
    for item in values:
        name, sep, _ = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"expected name=value, found {item!r} (e.g. -p n=3)", ctx=ctx, param=param
            )
    return values


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
        if not sep or not name:
            _bad_param(f"expected name=value, found {item!r} (e.g. -p n=3)")
        if name not in sig.parameters:
            _bad_param(
                f"pipeline {pipe.name!r} has no parameter {name!r}; its parameters are "
                f"{list(sig.parameters)}"
            )
        out[name] = _parse_value(raw, hints.get(name), name)
    return out


_PARAM_HELP = (
    "A pipeline parameter as name=value (repeatable). Values are parsed as JSON where they "
    'can be (3, 0.5, true, [1, 2], "text") and checked against the annotations.'
)


#: ``-p NAME=VALUE``, as ``run`` and ``plan`` take it
_params_option = click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help=_PARAM_HELP,
    callback=_check_param_syntax,
)


@click.command(short_help="Run a pipeline and record the run.")
@click.argument("target")
@_params_option
@click.option(
    "--executor",
    default="local",
    show_default=True,
    metavar="NAME",
    help="Where steps run: local, threads, processes, dask, gpu or a plugin's name "
    "(see `mlflowkit executors`).",
)
@click.option(
    "--max-workers",
    type=int,
    default=None,
    metavar="N",
    help="Workers for threads, processes or dask.",
)
@click.option(
    "--store", default=None, metavar="URL", help="Store (default $MLFLOWKIT_STORE or ./.mlflowkit)."
)
@click.option("--force", is_flag=True, help="Re-execute every step despite the cache.")
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal)."
)
@click.option(
    "--full",
    is_flag=True,
    help=f"Print the output whole (by default it is cut after {OUTPUT_LIMIT} characters).",
)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def run(
    target: str,
    params: tuple[str, ...],
    executor: str,
    max_workers: int | None,
    store: str | None,
    force: bool,
    progress: bool | None,
    full: bool,
    debug: bool,
) -> None:
    """Run a pipeline and record the run in the store.

    TARGET is FILE.py:PIPELINE or package.module:PIPELINE, e.g. examples/digits.py:digits.
    Steps whose results are in the store are not executed again. The command prints the
    pipeline's output, where the run record is, and the digests of the outputs.
    """

    def go() -> None:
        pipe = load_pipeline(target)
        values = parse_params(pipe, params)
        the_store = mk.Store(store) if store else mk.Store()
        result = pipe.plan(**values).run(
            executor=executor,
            store=the_store,
            force=force,
            progress=progress,
            max_workers=max_workers,
        )
        record = result.record
        took = f" in {record.finished_at - record.started_at:.2f} s" if record.finished_at else ""
        opt = f" --store {store}" if store else ""
        counts = describe_calls(count_calls(result.steps))
        click.echo(f"run {result.id} {result.status}{took}: {counts}")
        text = repr(result.output)
        if full or len(text) <= OUTPUT_LIMIT:
            click.echo(f"output: {text}")
        else:
            click.echo(f"output: {text[: OUTPUT_LIMIT - 1]}\u2026  (cut; --full prints it whole)")
        click.echo(f"record: {the_store.url.rstrip('/')}/runs/{result.id}.json")
        digests = output_digests(record.output)
        for digest in digests:
            click.echo(f"output digest: {digest}")
        click.echo(f"next:   mlflowkit runs show {result.id}{opt}")
        if digests:
            click.echo(f"        mlflowkit lineage {digests[0][:12]}{opt}")

    guard(debug, go)


@click.command(short_help="Show a pipeline's DAG without running it.")
@click.argument("target")
@_params_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
    help="text: one step call per line, with the calls it takes results from and its plain "
    "arguments; mermaid or dot: a graph to render.",
)
@click.option(
    "--explain",
    "explain_",
    is_flag=True,
    help="For each step call: is its result cached, or would a run now execute it, and why.",
)
@click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Store to explain against (default $MLFLOWKIT_STORE or ./.mlflowkit).",
)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def plan(
    target: str, params: tuple[str, ...], fmt: str, explain_: bool, store: str | None, debug: bool
) -> None:
    """Show the plan of a pipeline: its step calls and how they are wired. Nothing runs.

    TARGET is FILE.py:PIPELINE or package.module:PIPELINE. Render the graph with e.g.
    `mlflowkit plan pipe.py:train --format dot | dot -Tsvg > train.svg`. What the module
    prints while it is loaded goes to stderr; put a script's own work under
    `if __name__ == "__main__":` so that loading it does only the definitions.
    """

    def go() -> None:
        # the user's module and pipeline body may print: keep stdout for the plan alone, so
        # that `--format dot | dot -Tsvg` gets a clean graph
        with contextlib.redirect_stdout(sys.stderr):
            pipe = load_pipeline(target)
            the_plan = pipe.plan(**parse_params(pipe, params))
        if explain_:
            click.echo(str(the_plan.explain(mk.Store(store) if store else None)))
        elif fmt == "mermaid":
            click.echo(the_plan.to_mermaid(), nl=False)
        elif fmt == "dot":
            click.echo(the_plan.to_dot(), nl=False)
        else:
            for call in the_plan.calls():
                after = f"  <- {ranges(call.after)}" if call.after else ""
                plain = [f"{p}={short_repr(v, 30)}" for p, v in call.params.items()]
                given = f"  ({', '.join(plain)})" if plain else ""
                sized = "" if call.sized else "  (one call per item, known at run time)"
                click.echo(f"{call.name}{after}{given}{sized}")

    guard(debug, go)


@click.command(short_help="List the executors that can be used here.")
def executors() -> None:
    """List the executors that can be used here: built-ins whose requirements are installed
    (dask needs `pip install 'mlflowkit[dask]'`, gpu needs `pip install 'mlflowkit[gpu]'` and
    a CUDA device) and plugins registered under the `mlflowkit.executors` entry point group.
    """
    for name in mk.executors.available():
        click.echo(name)
