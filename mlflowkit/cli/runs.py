"""The commands that read run records: ``runs list|show|compare``, ``lineage``, ``export``.

Same invariant as the rest of the command line: an error prints one clear message and exits
with status 1 (2 for a malformed command line); ``--debug`` shows the traceback.
"""

from __future__ import annotations

from typing import Any

import click

from mlflowkit.cli.common import (
    DEBUG_OPTION,
    STORE_OPTION,
    ListByDefault,
    guard,
    open_store,
    ranges,
    short_repr,
    table,
)
from mlflowkit.records import count_calls, describe_calls

__all__ = ["export", "lineage", "runs"]


@click.group(cls=ListByDefault, short_help="List and show run records.")
def runs() -> None:
    """List and show the run records of a store; `mlflowkit runs` alone is `runs list`.

    Every `mlflowkit run` and `plan.run()` writes one: parameters, each step call's status,
    cache key and output digest, and the environment it ran in.
    """


@runs.command("list")
@STORE_OPTION
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs to show.")
@DEBUG_OPTION
def runs_list(store: str | None, limit: int, debug: bool) -> None:
    """The most recent runs, newest first."""

    def go() -> None:
        import time as _time

        rows = []
        for rec in open_store(store).runs()[:limit]:
            when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(rec.started_at))
            steps = describe_calls(count_calls(rec.steps))
            rows.append([rec.id, rec.pipeline, rec.status, when, steps])
        table("runs", ["id", "pipeline", "status", "started", "step calls"], rows)

    guard(debug, go)


_ALL_OPTION = click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show internal nodes: items of an unpacked tuple (split.0), attributes, gathers.",
)


@runs.command("show")
@click.argument("run_id")
@STORE_OPTION
@_ALL_OPTION
@DEBUG_OPTION
def runs_show(run_id: str, store: str | None, show_all: bool, debug: bool) -> None:
    """Step calls, statuses and digests of one run (a unique id prefix is enough)."""

    def go() -> None:
        rec = open_store(store).run(run_id)
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
        table(
            f"steps of {rec.id}",
            ["step", "status", "attempts", "duration", "output", "error"],
            rows,
        )

    guard(debug, go)


@click.command(short_help="Show what an artifact was made from.")
@click.argument("digest")
@STORE_OPTION
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show internal nodes: items of an unpacked tuple (split.0), attributes, gathers.",
)
@DEBUG_OPTION
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
        graph = open_store(store).lineage(digest)
        artifacts = [n for n, d in graph.nodes(data=True) if d.get("kind") == "artifact"]
        matching = [n for n in artifacts if str(n).startswith(digest)]
        _print_lineage(graph, (matching or artifacts)[0], show_all)

    guard(debug, go)


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
            f"{p}={short_repr(graph.nodes[d]['value'], 30)}"
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
        return ranges(tuple(c[0] + s for c, s in found))

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


@runs.command("compare")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--pipeline", default=None, metavar="NAME", help="Only the runs of this pipeline.")
@STORE_OPTION
@DEBUG_OPTION
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

        the_store = open_store(store)
        records = [the_store.run(r) for r in run_ids] if run_ids else the_store.runs()
        title = f"runs of {pipeline}" if pipeline else "runs"
        if not print_comparison(records, pipeline, title=title):
            which = f" of pipeline {pipeline!r}" if pipeline else ""
            click.echo(f"no runs{which} in store {the_store.url}")

    guard(debug, go)


@click.group(short_help="Export runs to other tools (MLflow).")
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
@STORE_OPTION
@DEBUG_OPTION
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

        the_store = open_store(store)
        ids = [the_store.run(r).id for r in run_ids] if run_ids else None
        exported = export_runs(the_store, tracking_uri, experiment=experiment, runs=ids)
        for run_id, mlflow_id in exported.items():
            click.echo(f"{run_id} -> {mlflow_id}")
        click.echo(f"{len(exported)} run(s) in MLflow at {tracking_uri}")

    guard(debug, go)
