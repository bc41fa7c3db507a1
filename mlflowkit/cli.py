"""The ``mlflowkit`` command line, built on the public API only.

Invariant: an error prints one clear message (what, where, how to fix) and exits with status
1 (2 for a malformed command line); ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
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
from mlflowkit.records import count_calls, describe_calls
from mlflowkit.wiring import check_value, describe

__all__ = ["main"]


def _fail(message: str) -> typing.NoReturn:
    raise click.ClickException(message)


def load_pipeline(target: str) -> mk.Pipeline[Any, Any]:
    """Load ``FILE.py:NAME`` or ``package.module:NAME`` and return the pipeline."""
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        _fail(
            f"expected FILE_OR_MODULE:PIPELINE (e.g. examples/digits.py:digits), found {target!r}"
        )
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
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise _UserCodeError(f"importing {source!r} failed", exc) from exc
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError as exc:
            if exc.name and source.startswith(exc.name):
                _fail(
                    f"cannot import module {source!r}: {exc}. Give a file path (e.g. "
                    f"pipelines.py:train) or an importable module name"
                )
            raise _UserCodeError(f"importing {source!r} failed", exc) from exc
        except Exception as exc:
            raise _UserCodeError(f"importing {source!r} failed", exc) from exc
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


class _UserCodeError(Exception):
    """The user's module raised while it was imported."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(what)
        self.what = what
        self.cause = cause


_DEBUG_HINT = "(run again with --debug for the full traceback)"
_STEP_TRACEBACK = "\n\nTraceback of the step (where it ran):\n"


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame of ``exc``'s traceback outside mlflowkit."""
    import traceback

    package = os.path.dirname(os.path.abspath(mk.__file__))
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(f.filename).startswith(package + os.sep)
        and "importlib" not in f.filename
    ]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _step_line(traceback_text: str) -> str:
    """The last ``File "...", line N, in f`` of a step's traceback text, as ``file:N in f``."""
    found = ""
    for line in traceback_text.splitlines():
        stripped = line.strip()
        if stripped.startswith('File "'):
            path, _, rest = stripped[len('File "') :].partition('", line ')
            number, _, func = rest.partition(", in ")
            found = f"{path}:{number} in {func}"
    return found


def _message(exc: mk.MlflowkitError) -> str:
    text = f"{type(exc).__name__}: {exc}"
    head, sep, tb = text.partition(_STEP_TRACEBACK)
    if sep:  # a failed step: its own error, and the line of the step that raised it
        line = _step_line(tb)
        text = head + (f"\n  raised at {line}" if line else "")
    return f"{text}\n{_DEBUG_HINT}"


def _guard(debug: bool, fn: Callable[[], None]) -> None:
    """Run a command body; turn errors into one clear message, or re-raise with --debug."""
    try:
        fn()
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except mk.MlflowkitError as exc:
        if debug:
            raise
        raise click.ClickException(_message(exc)) from None
    except _UserCodeError as exc:
        if debug:
            raise exc.cause from None
        cause = exc.cause
        raise click.ClickException(
            f"{exc.what}: {type(cause).__name__}: {cause}{_where(cause)}\n{_DEBUG_HINT}"
        ) from None
    except Exception as exc:  # user code raised while planning (the pipeline body)
        if debug:
            raise
        raise click.ClickException(
            f"{type(exc).__name__}: {exc}{_where(exc)}\n{_DEBUG_HINT}"
        ) from None


_EPILOG = """\b
Examples:
  mlflowkit plan examples/digits.py:digits            the DAG, nothing runs
  mlflowkit plan examples/digits.py:digits --explain  what is cached, what would execute, why
  mlflowkit run examples/digits.py:digits -p seed=1   run it (results in ./.mlflowkit)
  mlflowkit runs list                                 recent runs
  mlflowkit runs show RUN_ID                          steps, statuses and digests of a run
  mlflowkit runs compare --pipeline digits            parameters and metrics of its runs
  mlflowkit lineage DIGEST                            what an artifact was made from
  mlflowkit artifacts                                 named artifacts, versions, stages
  mlflowkit promote digits-model@4 --to prototype     move a stage, through its gates

The store is ./.mlflowkit unless --store URL or $MLFLOWKIT_STORE says otherwise.
Errors print one message; add --debug for the full traceback."""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.version_option(mk.__version__, prog_name="mlflowkit")
def main() -> None:
    """mlflowkit: typed, cached, reproducible ML pipelines from plain Python functions.

    A pipeline is named as FILE.py:PIPELINE or package.module:PIPELINE.
    """


_PARAM_HELP = (
    "A pipeline parameter as name=value (repeatable). Values are parsed as JSON where they "
    'can be (3, 0.5, true, [1, 2], "text") and checked against the annotations.'
)


#: characters of a run's output that ``mlflowkit run`` prints unless given ``--full``
_OUTPUT_LIMIT = 400


def _short_repr(value: Any, limit: int = _OUTPUT_LIMIT) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _digests(template: Any) -> list[str]:
    """The ``{"$digest": ...}`` entries of a run record's output template, in order."""
    if isinstance(template, dict):
        if set(template) == {"$digest"}:
            return [str(template["$digest"])]
        return [d for v in template.values() for d in _digests(v)]
    if isinstance(template, list):
        return [d for v in template for d in _digests(v)]
    return []


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


@main.command(short_help="Run a pipeline and record the run.")
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
    help=f"Print the output whole (by default it is cut after {_OUTPUT_LIMIT} characters).",
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
        if full or len(text) <= _OUTPUT_LIMIT:
            click.echo(f"output: {text}")
        else:
            click.echo(f"output: {text[: _OUTPUT_LIMIT - 1]}\u2026  (cut; --full prints it whole)")
        click.echo(f"record: {the_store.url.rstrip('/')}/runs/{result.id}.json")
        digests = _digests(record.output)
        for digest in digests:
            click.echo(f"output digest: {digest}")
        click.echo(f"next:   mlflowkit runs show {result.id}{opt}")
        if digests:
            click.echo(f"        mlflowkit lineage {digests[0][:12]}{opt}")

    _guard(debug, go)


@main.command(short_help="Show a pipeline's DAG without running it.")
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
                after = f"  <- {_ranges(call.after)}" if call.after else ""
                plain = [f"{p}={_short_repr(v, 30)}" for p, v in call.params.items()]
                given = f"  ({', '.join(plain)})" if plain else ""
                sized = "" if call.sized else "  (one call per item, known at run time)"
                click.echo(f"{call.name}{after}{given}{sized}")

    _guard(debug, go)


def _ranges(names: tuple[str, ...]) -> str:
    """``fit[0..4], scale`` from ``fit[0], fit[1], fit[2], fit[3], fit[4], scale``."""
    import re

    parts: list[list[Any]] = []  # [base, first, last] of a run of elements, or [name]
    for name in names:
        m = re.fullmatch(r"(.+)\[(\d+)\]", name)
        last = parts[-1] if parts else None
        if m and last and len(last) == 3 and last[0] == m[1] and int(m[2]) == last[2] + 1:
            last[2] += 1
            continue
        parts.append([m[1], int(m[2]), int(m[2])] if m else [name])
    return ", ".join(
        p[0] if len(p) == 1 else f"{p[0]}[{p[1]}]" if p[1] == p[2] else f"{p[0]}[{p[1]}..{p[2]}]"
        for p in parts
    )


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
    "--store",
    default=None,
    metavar="URL",
    help="Store folder or fsspec URL (default $MLFLOWKIT_STORE or ./.mlflowkit).",
)
_DEBUG_OPTION = click.option("--debug", is_flag=True, help="Show full tracebacks.")


class _ListByDefault(click.Group):
    """A group whose bare invocation (or one starting with an option) runs ``list``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_ListByDefault, short_help="List and show run records.")
def runs() -> None:
    """List and show the run records of a store; `mlflowkit runs` alone is `runs list`.

    Every `mlflowkit run` and `plan.run()` writes one: parameters, each step call's status,
    cache key and output digest, and the environment it ran in.
    """


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
            when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(rec.started_at))
            steps = describe_calls(count_calls(rec.steps))
            rows.append([rec.id, rec.pipeline, rec.status, when, steps])
        _table("runs", ["id", "pipeline", "status", "started", "step calls"], rows)

    _guard(debug, go)


_ALL_OPTION = click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show internal nodes: items of an unpacked tuple (split.0), attributes, gathers.",
)


@runs.command("show")
@click.argument("run_id")
@_STORE_OPTION
@_ALL_OPTION
@_DEBUG_OPTION
def runs_show(run_id: str, store: str | None, show_all: bool, debug: bool) -> None:
    """Step calls, statuses and digests of one run (a unique id prefix is enough)."""

    def go() -> None:
        rec = _open(store).run(run_id)
        counts = count_calls(rec.steps)
        click.echo(
            f"run {rec.id}  pipeline {rec.pipeline}  {rec.status}  params {rec.params}  "
            f"{counts['total']} step calls: {describe_calls(counts)}"
        )
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
            if show_all or not s.internal or s.status == "failed"
        ]
        _table(
            f"steps of {rec.id}",
            ["step", "status", "attempts", "duration", "output", "error"],
            rows,
        )

    _guard(debug, go)


@main.command(short_help="Show what an artifact was made from.")
@click.argument("digest")
@_STORE_OPTION
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show internal nodes: items of an unpacked tuple (split.0), attributes, gathers.",
)
@_DEBUG_OPTION
def lineage(digest: str, store: str | None, show_all: bool, debug: bool) -> None:
    """Everything upstream of an artifact: the step calls that made it, their inputs, and so on.

    DIGEST is an output digest (a unique prefix is enough), as shown by `mlflowkit run` and
    `mlflowkit runs show`. Each input shows the step call it came from (`X from split, item 0`)
    or, for a pipeline parameter, its value (`seed = 0`). A step call is expanded where it
    first appears; later appearances say "(see above)". A step call that several runs
    executed or found cached is one entry naming those runs (repeated only where the runs
    differ from those of the call that uses it).
    """

    def go() -> None:
        graph = _open(store).lineage(digest)
        artifacts = [n for n, d in graph.nodes(data=True) if d.get("kind") == "artifact"]
        matching = [n for n in artifacts if str(n).startswith(digest)]
        _print_lineage(graph, (matching or artifacts)[0], show_all)

    _guard(debug, go)


_OPS = {
    "mlflowkit.plan:_op_getitem": "item",
    "mlflowkit.plan:_op_getattr": "attribute",
    "mlflowkit.plan:_op_gather": "gather",
}


def _print_lineage(graph: Any, root: str, show_all: bool = False) -> None:
    """Print the lineage tree of ``root``; see ``lineage``'s help for what it shows."""
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    Call = tuple[str, str]  # (display name, cache key): one entry for all runs that had it
    calls: dict[Call, list[dict[str, Any]]] = {}
    made_by: dict[str, list[dict[str, Any]]] = {}  # artifact -> the step runs that output it
    for node, data in sorted(graph.nodes(data=True), key=lambda item: str(item[0])):
        if data.get("kind") == "step":
            calls.setdefault(_call_of(node, data), []).append(data)
            made_by.setdefault(str(data.get("output_digest")), []).append(data)

    def op(data: dict[str, Any]) -> str | None:
        identity = str(data.get("step", "")).partition("@")[0]
        return _OPS.get(identity) if data.get("internal") else None

    def producers(artifact: str, consumer: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The step runs ``artifact`` came from: for a step's input, those earlier in the same
        run (an equal value made elsewhere, or later, is a coincidence of content)."""
        found = made_by.get(artifact, [])
        if consumer is not None:
            run, position = consumer.get("run_id"), consumer.get("position", -1)
            found = [d for d in found if d.get("run_id") == run and d.get("position", 0) < position]
        return found

    def sources(artifact: str, consumer: dict[str, Any] | None) -> list[tuple[Call, str]]:
        """The step calls whose output ``artifact`` is, each with ``, item 1`` and the like
        when it is a part of that output (internal nodes are seen through unless --all)."""
        made = producers(artifact, consumer)
        user = [d for d in made if op(d) is None]  # an item of a gather is its element
        if user or show_all:
            return list(dict.fromkeys((_call_of(None, d), "") for d in user or made))
        found: list[tuple[Call, str]] = []
        for internal in made:
            inputs = internal.get("inputs") or []
            if op(internal) == "gather":
                found.extend(s for _, d in inputs for s in sources(d, internal))
                continue
            name = str(internal["name"])
            for _, d in (i for i in inputs if i[0] == "obj"):
                for call, suffix in sources(d, internal):
                    part = name[len(call[0]) + 1 :] if name.startswith(call[0] + ".") else name
                    found.append((call, f"{suffix}, {op(internal)} {part}"))
        return list(dict.fromkeys(found))

    def first(call: Call) -> dict[str, Any]:
        return calls[call][0]

    def runs_of(call: Call) -> str:
        return _runs_text(calls[call])

    def inputs_of(call: Call) -> list[tuple[str, str]]:
        return [(str(p), str(d)) for p, d in first(call).get("inputs") or []]

    def given(artifact: str, consumer: dict[str, Any]) -> bool:  # a pipeline parameter's value
        return "value" in graph.nodes[artifact] and not producers(artifact, consumer)

    def call_text(head: str, call: Call, suffix: str, parent_runs: str) -> Text:
        text = Text(head)
        text.append(call[0], style="cyan")
        text.append(suffix)
        values = [
            f"{p}={_short_repr(graph.nodes[d]['value'], 30)}"
            for p, d in inputs_of(call)
            if given(d, first(call))
        ]
        if values:
            text.append(f"  ({', '.join(values)})")
        if runs_of(call) != parent_runs:
            text.append(f"  {runs_of(call)}", style="dim")
        return text

    def from_text(found: list[tuple[Call, str]]) -> str:
        if len(found) == 1:
            return found[0][0][0] + found[0][1]
        return _ranges(tuple(c[0] + s for c, s in found))

    pending: list[tuple[Any, Call]] = []  # (tree node, call) to expand, in print order
    expanded: set[Call] = set()

    def add_inputs(branch: Any, call: Call) -> None:
        consumer = first(call)
        seen = []  # inputs from calls already expanded (above): one line for them all
        for head, artifact in inputs_of(call):
            found = sources(artifact, consumer)
            if found and all(c in expanded for c, _ in found):
                seen.append(f"{head} from {from_text(found)}")
            elif len(found) == 1:
                label = call_text(f"{head} = {artifact[:12]} from ", *found[0], runs_of(call))
                pending.append((branch.add(label), found[0][0]))
            elif found:
                line = branch.add(Text(f"{head} = {artifact[:12]} from {from_text(found)}"))
                for c, suffix in found:
                    pending.append((line.add(call_text("", c, suffix, runs_of(call))), c))
            elif not given(artifact, consumer):
                text = Text(f"{head} = {artifact[:12]}")
                text.append("  (an input value; only its digest is recorded)", style="dim")
                branch.add(text)
        if seen:
            branch.add(Text("; ".join(seen) + "  (see above)", style="dim"))

    found = sources(root, None)
    if len(found) == 1:  # the usual case: the root line is the call that made it
        tree = Tree(call_text(f"{root[:16]} from ", *found[0], ""))
        pending.append((tree, found[0][0]))
    else:
        made = f" from {from_text(found)}" if found else "  (no step call of these runs made it)"
        tree = Tree(Text(root[:16] + made))
        for call, suffix in found:
            pending.append((tree.add(call_text("", call, suffix, "")), call))
    stack = list(reversed(pending))
    while stack:
        branch, call = stack.pop()
        if call in expanded:
            if any(not given(d, first(call)) for _, d in inputs_of(call)):
                branch.label.append("  (see above)", style="dim")
            continue
        expanded.add(call)
        pending = []
        add_inputs(branch, call)
        stack.extend(reversed(pending))
    Console(width=120).print(tree)


def _call_of(node: Any, data: dict[str, Any]) -> tuple[str, str]:
    """A step call across runs: its display name and cache key."""
    return (str(data["name"]), str(data.get("key") or node or (data["run_id"], data["name"])))


def _runs_text(runs: list[dict[str, Any]]) -> str:
    """``executed in run A; cached in runs B, C`` (at most 3 ids per status, then a count)."""
    by_status: dict[str, list[str]] = {}
    for data in runs:
        by_status.setdefault(str(data["status"]), []).append(str(data["run_id"]))
    parts = []
    for status, ids in by_status.items():
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        parts.append(f"{status} in run{'s' if len(ids) > 1 else ''} {shown}")
    return "; ".join(parts)


@main.group("store", short_help="Check, clean and measure the artifact store.")
def store_group() -> None:
    """Check, clean and measure the artifact store."""


@store_group.command("verify")
@_STORE_OPTION
@_DEBUG_OPTION
def store_verify(store: str | None, debug: bool) -> None:
    """Re-hash every stored object, set aside and list the corrupt ones; check signatures,
    the policy chain and the audit trail, and list what fails."""

    def go() -> None:
        bad = _open(store).verify()
        corrupt = [b for b in bad if " " not in b]
        for digest in corrupt:
            click.echo(f"corrupt: {digest}")
        for line in bad:
            if " " in line:
                click.echo(line)
        if bad:
            raise click.ClickException(
                f"{len(corrupt)} corrupt object(s) set aside (the steps that made them "
                f"re-execute on the next run); {len(bad) - len(corrupt)} untrusted or broken "
                "signed record(s), left in place and never used"
            )
        click.echo("all objects verified, and every signature and the audit trail")

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
        r = _open(store).gc(keep_last=keep_last, pins=list(pins), dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        click.echo(
            f"{verb} {r.objects_deleted} object(s) and {r.cache_deleted} cache entries "
            f"({_size(r.bytes_freed)}); kept {r.objects_kept} object(s) and {r.cache_kept} "
            f"cache entries"
        )
        if r.quarantine_deleted or r.tmp_deleted:
            click.echo(
                f"{verb} {r.quarantine_deleted} quarantined object(s) and {r.tmp_deleted} "
                f"stale temporary file(s)"
            )

    _guard(debug, go)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@store_group.command("du")
@_STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_DEBUG_OPTION
def store_du(store: str | None, as_json: bool, debug: bool) -> None:
    """Disk usage of the store by area: objects, cache entries, runs, packs, quarantine, tmp."""

    def go() -> None:
        the_store = _open(store)
        usage = the_store.du()
        if as_json:
            click.echo(json.dumps(usage, indent=2, default=str))
            return
        rows = [
            [area, str(v.get("count", "")), _size(int(v.get("bytes", 0)))]
            for area, v in usage.items()
        ]
        _table(f"store {the_store.url}", ["area", "count", "size"], rows)

    _guard(debug, go)


@main.command(short_help="List the executors that can be used here.")
def executors() -> None:
    """List the executors that can be used here: built-ins whose requirements are installed
    (dask needs `pip install 'mlflowkit[dask]'`, gpu needs `pip install 'mlflowkit[gpu]'` and
    a CUDA device) and plugins registered under the `mlflowkit.executors` entry point group.
    """
    for name in mk.executors.available():
        click.echo(name)


def _add_registry_commands() -> None:
    """``artifacts``, ``promote`` and ``reproduce`` live in their own module."""
    from mlflowkit.cli_registry import add_commands

    add_commands(main)


_add_registry_commands()

# the tracking commands (runs compare, export mlflow) live in their own module
from mlflowkit import _cli_tracking  # noqa: E402, F401
from mlflowkit import cli_trust as _cli_trust  # noqa: E402,F401 - registers keys/policy/audit


def cli_main() -> None:  # pragma: no cover - console entry point alias
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
