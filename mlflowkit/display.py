"""Progress displays and notebook renderings of plans, runs and explanations.

Invariants
----------
* Nothing here is imported by ``import mlflowkit``; rich and IPython are imported only when a
  progress display is actually shown.
* Progress defaults to on for a terminal or a notebook and off otherwise (pipes, CI logs),
  unless asked for explicitly. In a notebook it is HTML updated in place through IPython's
  display handles (no widgets, no network); in a terminal it is a rich progress bar.
* A picture of a plan never needs the network: SVG from Graphviz when the ``dot`` program is
  installed, otherwise SVG drawn here by a small layered layout. Every string that comes from
  user code (step names, reasons, locations) is escaped.
"""

from __future__ import annotations

import graphlib
import html
import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflowkit.interactive import in_notebook, wants_progress
from mlflowkit.outcomes import Progress
from mlflowkit.records import count_calls, describe_calls

if TYPE_CHECKING:
    from mlflowkit.plan import TracedPlan
    from mlflowkit.run import Run

__all__ = [
    "NotebookProgress",
    "PlanView",
    "RichProgress",
    "explanation_html",
    "in_notebook",
    "make_progress",
    "plan_html",
    "plan_svg",
    "run_html",
]


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------
def make_progress(progress: bool | None) -> Progress:
    """A progress display: on when asked, or by default for a terminal or a notebook.

    In a notebook the display is :class:`NotebookProgress`, in a terminal
    :class:`RichProgress`; ``progress=False`` (or a pipe) gives the silent base class.
    """
    if not wants_progress(progress):
        return Progress()
    return NotebookProgress() if in_notebook() else RichProgress()


class _Counts:
    """Step calls ended so far, by status."""

    def __init__(self) -> None:
        self.by_status = {"executed": 0, "cached": 0, "failed": 0, "skipped": 0}
        self.total = 0
        self.last = ""

    @property
    def done(self) -> int:
        return sum(self.by_status.values())

    def summary(self) -> str:
        return describe_calls(self.by_status)

    def advance(self, name: str, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.last = name


class RichProgress(Progress):
    """A rich progress bar counting executed, cached and failed step calls (for terminals)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._counts = _Counts()

    def start(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        self._counts.total = total
        self._bar = RichBar(
            TextColumn("[bold]mlflowkit[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("", total=total)

    def grow(self, extra: int) -> None:
        self._counts.total += extra
        self._bar.update(self._task, total=self._counts.total)

    def advance(self, name: str, status: str) -> None:
        self._counts.advance(name, status)
        desc = f"{name[:30]:<30} {self._counts.summary()}"
        self._bar.update(self._task, advance=1, description=desc)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _ipython_display() -> Any:
    """``IPython.display`` (untyped), imported only when a notebook shows progress."""
    import importlib

    return importlib.import_module("IPython.display")


class NotebookProgress(Progress):
    """A progress bar for Jupyter: one HTML output updated in place, at most 10 times a second.

    It needs neither ipywidgets nor the network: it uses IPython's display handles, which
    every Jupyter front end (JupyterLab, Notebook, VS Code) supports.
    """

    #: seconds between two redraws while a run is going
    interval = 0.1

    def __init__(self) -> None:
        self._counts = _Counts()
        self._handle: Any = None
        self._started = 0.0
        self._drawn = 0.0
        self._finished = False

    def start(self, total: int) -> None:
        ipd = _ipython_display()
        self._counts.total = total
        self._started = time.perf_counter()
        self._handle = ipd.display(ipd.HTML(self.html()), display_id=True)

    def grow(self, extra: int) -> None:
        self._counts.total += extra
        self._redraw(force=False)

    def advance(self, name: str, status: str) -> None:
        self._counts.advance(name, status)
        self._redraw(force=False)

    def finish(self) -> None:
        self._finished = True
        self._redraw(force=True)

    def _redraw(self, *, force: bool) -> None:
        now = time.perf_counter()
        if self._handle is None or (not force and now - self._drawn < self.interval):
            return
        self._drawn = now
        self._handle.update(_ipython_display().HTML(self.html()))

    def html(self) -> str:
        """The bar as it should look now."""
        c = self._counts
        total = max(c.total, c.done, 1)
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        state = "done" if self._finished else html.escape(c.last[:40]) or "starting"
        color = "#c0392b" if c.by_status["failed"] else "#2e7d32"
        return (
            "<div class='mlflowkit-progress' style='font-family:sans-serif;font-size:13px'>"
            "<b>mlflowkit</b> "
            f"<span style='display:inline-block;vertical-align:middle;width:200px;height:10px;"
            f"background:#e0e0e0;border-radius:5px;overflow:hidden'>"
            f"<span style='display:block;height:10px;width:{100 * c.done / total:.0f}%;"
            f"background:{color}'></span></span> "
            f"{c.done}/{c.total} step calls &middot; {html.escape(c.summary())} &middot; "
            f"{elapsed:.1f} s &middot; <i>{state}</i></div>"
        )


# ---------------------------------------------------------------------------------------------
# what a node looks like
# ---------------------------------------------------------------------------------------------
#: fill colour and legend label of each mark (explain actions and step-run statuses)
_STYLE: dict[str, tuple[str, str]] = {
    "hit": ("#d4edda", "cached"),
    "cached": ("#d4edda", "cached"),
    "execute": ("#fff3cd", "will execute"),
    "executed": ("#cce5ff", "executed"),
    "failed": ("#f8d7da", "failed"),
    "skipped": ("#eeeeee", "skipped"),
}
_PLAIN = "#ffffff"
_FONT = "ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
_CHAR_W = 7.3  # width of one character of the 12px monospace font, generously
_BOX_H = 28
_LAYER_GAP = 50
_NODE_GAP = 18
_MARGIN = 12
_MAX_LABEL = 36
_DUMMY_W = 6.0
#: a plan with more boxes than this is summarized instead of drawn (use Graphviz)
_MAX_DRAWN = 400
#: a fan-out with more elements than this is drawn as one box
_COLLAPSE_OVER = 6
_ELEMENT = re.compile(r"^(?P<base>.+)\[(?P<i>\d+)\]$")


def _fill(mark: str | None) -> str:
    return _STYLE.get(mark or "", (_PLAIN, ""))[0]


def _label(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "\u2026"


@dataclass
class _Vertex:
    """One box of the picture: a step call, or several collapsed fan-out elements."""

    id: str
    label: str
    members: list[str]
    derived: bool
    tooltip: str
    mark: str | None
    layer: int = 0
    order: float = 0.0
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    dummy: bool = False


def _short_location(location: str) -> str:
    """``file.py:12`` from ``/some/folder/file.py:12`` (tooltips stay short and portable)."""
    path, sep, line = location.rpartition(":")
    return f"{os.path.basename(path)}{sep}{line}" if sep else location


def _combine_marks(marks: Iterable[str | None]) -> str | None:
    found = {m for m in marks if m}
    for strongest in ("failed", "execute", "executed", "skipped"):
        if strongest in found:
            return strongest
    if found & {"hit", "cached"}:
        return "cached"
    return None


def _vertices(
    plan: TracedPlan, marks: Mapping[str, str], reasons: Mapping[str, str]
) -> tuple[dict[str, _Vertex], list[tuple[str, str]]]:
    """The boxes and edges to draw: fan-outs with many elements collapse into one box."""
    groups: dict[str, list[str]] = {}
    for name in plan.nodes:
        m = _ELEMENT.match(name)
        if m is not None:
            groups.setdefault(m["base"], []).append(name)
    owner: dict[str, str] = {}
    vertices: dict[str, _Vertex] = {}
    for name, node in plan.nodes.items():
        m = _ELEMENT.match(name)
        if m is not None and len(groups[m["base"]]) > _COLLAPSE_OVER:
            vid = f"{m['base']}[*]"
            owner[name] = vid
            if vid not in vertices:
                members = groups[m["base"]]
                vertices[vid] = _Vertex(
                    vid,
                    f"{_label(m['base'])}[0..{len(members) - 1}]",
                    members,
                    derived=False,
                    tooltip="",
                    mark=None,
                )
            continue
        owner[name] = name
        vertices[name] = _Vertex(
            name, _label(name), [name], derived=node.kind == "derived", tooltip="", mark=None
        )
    for vertex in vertices.values():
        vertex.mark = _combine_marks(marks.get(n) for n in vertex.members)
        first = plan.nodes[vertex.members[0]]
        lines = [vertex.id if len(vertex.members) == 1 else f"{len(vertex.members)} calls"]
        if first.kind == "map":
            lines.append("one call per element of a list known at run time")
        if first.kind != "derived":
            lines.append(f"step {first.step.qualified_name}")
        lines.append(f"at {_short_location(first.location)}")
        if vertex.mark:
            lines.append(_STYLE.get(vertex.mark, ("", vertex.mark))[1])
        whys = list(dict.fromkeys(reasons[n] for n in vertex.members if reasons.get(n)))
        lines.extend(whys[:3])
        vertex.tooltip = "\n".join(lines)
    edges: dict[tuple[str, str], None] = {}  # ordered and without repeats
    for name, node in plan.nodes.items():
        for dep in node.deps:
            edge = (owner[dep], owner[name])
            if edge[0] != edge[1]:
                edges[edge] = None
    return vertices, list(edges)


def _layout(
    vertices: dict[str, _Vertex], edges: list[tuple[str, str]]
) -> tuple[float, float, list[list[str]]]:
    """Place the boxes (a small Sugiyama layout) and route the edges.

    Layer = longest path from a source; an edge spanning several layers passes through
    invisible points in the layers between (so it can bend around boxes instead of crossing
    them); boxes are ordered within their layer by barycenter sweeps. Returns the picture's
    width and height and each edge as the chain of vertex ids it passes through.
    """
    parents: dict[str, list[str]] = {v: [] for v in vertices}
    for a, b in edges:
        parents[b].append(a)
    for vid in graphlib.TopologicalSorter(parents).static_order():
        vertices[vid].layer = 1 + max((vertices[p].layer for p in parents[vid]), default=-1)
    routes: list[list[str]] = []
    for a, b in edges:
        chain = [a]
        for layer in range(vertices[a].layer + 1, vertices[b].layer):
            did = f"\x00{len(vertices)}"
            vertices[did] = _Vertex(did, "", [], False, "", None, layer=layer, dummy=True)
            chain.append(did)
        chain.append(b)
        routes.append(chain)
    up: dict[str, list[str]] = {v: [] for v in vertices}
    down: dict[str, list[str]] = {v: [] for v in vertices}
    for chain in routes:
        for a, b in itertools.pairwise(chain):
            up[b].append(a)
            down[a].append(b)
    layers: dict[int, list[str]] = {}
    for i, (vid, vertex) in enumerate(vertices.items()):
        vertex.order = float(i)
        layers.setdefault(vertex.layer, []).append(vid)
    for vids in layers.values():
        vids.sort(key=lambda v: vertices[v].order)
        for rank, vid in enumerate(vids):
            vertices[vid].order = float(rank)

    def sweep(neighbours: dict[str, list[str]], sequence: list[int]) -> None:
        for layer in sequence:
            for vid in layers[layer]:
                near = [vertices[n].order for n in neighbours[vid]]
                if near:
                    vertices[vid].order = sum(near) / len(near)
            layers[layer].sort(key=lambda v: vertices[v].order)
            for rank, vid in enumerate(layers[layer]):
                vertices[vid].order = float(rank)

    depth = sorted(layers)
    for _ in range(4):
        sweep(up, depth[1:])
        sweep(down, list(reversed(depth[:-1])))
    sweep(up, depth[1:])

    widths: dict[int, float] = {}
    for layer, vids in layers.items():
        total = 0.0
        for vid in vids:
            vertex = vertices[vid]
            vertex.width = _DUMMY_W if vertex.dummy else max(56.0, _CHAR_W * len(vertex.label) + 20)
            total += vertex.width
        widths[layer] = total + _NODE_GAP * (len(vids) - 1)
    full = max(widths.values(), default=0.0)
    for layer, vids in layers.items():
        x = _MARGIN + (full - widths[layer]) / 2
        for vid in vids:
            vertex = vertices[vid]
            vertex.x = x
            vertex.y = _MARGIN + layer * (_BOX_H + _LAYER_GAP)
            x += vertex.width + _NODE_GAP
    height = _MARGIN * 2 + len(layers) * _BOX_H + max(len(layers) - 1, 0) * _LAYER_GAP
    return full + 2 * _MARGIN, float(height), routes


def _route(vertices: dict[str, _Vertex], chain: list[str]) -> str:
    """SVG path data of one edge: curves between layers, straight through invisible points."""
    first = vertices[chain[0]]
    x, y = first.x + first.width / 2, first.y + _BOX_H
    parts = [f"M {x:.1f} {y:.1f}"]
    for vid in chain[1:]:
        vertex = vertices[vid]
        nx_, ny = vertex.x + vertex.width / 2, vertex.y
        mid = (y + ny) / 2
        end = ny - 1 if not vertex.dummy else ny
        parts.append(f"C {x:.1f} {mid:.1f}, {nx_:.1f} {mid:.1f}, {nx_:.1f} {end:.1f}")
        x, y = nx_, ny
        if vertex.dummy:
            y = ny + _BOX_H
            parts.append(f"L {x:.1f} {y:.1f}")
    return " ".join(parts)


def _layered_svg(plan: TracedPlan, marks: Mapping[str, str], reasons: Mapping[str, str]) -> str:
    vertices, edges = _vertices(plan, marks, reasons)
    if len(vertices) > _MAX_DRAWN:
        return _too_big(plan)
    width, height, routes = _layout(vertices, edges)
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' class='mlflowkit-dag' role='img' "
        f"aria-label='{html.escape(plan.pipeline, quote=True)} DAG' width='{width:.0f}' "
        f"height='{height:.0f}' viewBox='0 0 {width:.0f} {height:.0f}' "
        f"style='max-width:100%;height:auto'>",
        "<defs><marker id='mlflowkit-arrow' viewBox='0 0 10 10' refX='9' refY='5' "
        "markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
        "<path d='M 0 0 L 10 5 L 0 10 z' fill='#666'/></marker></defs>",
    ]
    out.extend(
        f"<path d='{_route(vertices, chain)}' fill='none' stroke='#888' stroke-width='1.2' "
        f"marker-end='url(#mlflowkit-arrow)'/>"
        for chain in routes
    )
    for vertex in vertices.values():
        if vertex.dummy:
            continue
        radius = _BOX_H / 2 if vertex.derived else 4
        stroke = "#c0392b" if vertex.mark == "failed" else "#555"
        dash = " stroke-dasharray='4 2'" if vertex.derived else ""
        size = 11 if vertex.derived else 12
        shadow = (
            f"<rect x='{vertex.x + 4:.1f}' y='{vertex.y - 4:.1f}' width='{vertex.width:.1f}' "
            f"height='{_BOX_H}' rx='{radius}' fill='{_fill(vertex.mark)}' stroke='{stroke}'/>"
            if len(vertex.members) > 1 or _is_map(plan, vertex)
            else ""
        )
        out.append(
            f"<g class='mlflowkit-node' data-mark='{vertex.mark or ''}'>"
            f"<title>{html.escape(vertex.tooltip)}</title>{shadow}"
            f"<rect x='{vertex.x:.1f}' y='{vertex.y:.1f}' width='{vertex.width:.1f}' "
            f"height='{_BOX_H}' rx='{radius}' fill='{_fill(vertex.mark)}' stroke='{stroke}'"
            f"{dash}/>"
            f"<text x='{vertex.x + vertex.width / 2:.1f}' y='{vertex.y + _BOX_H / 2 + 4:.1f}' "
            f"text-anchor='middle' font-family='{_FONT}' font-size='{size}' fill='#222'>"
            f"{html.escape(vertex.label)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _is_map(plan: TracedPlan, vertex: _Vertex) -> bool:
    """A fan-out decided at run time: drawn as a stack, like a folded fan-out."""
    return not vertex.dummy and plan.nodes[vertex.members[0]].kind == "map"


def _too_big(plan: TracedPlan) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' class='mlflowkit-dag' width='560' "
        f"height='40'><text x='8' y='24' font-family='sans-serif' font-size='13'>"
        f"{html.escape(plan.pipeline)}: {html.escape(plan.describe_calls())}, too many to draw "
        f"here; "
        f"use plan.to_dot() with Graphviz</text></svg>"
    )


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _graphviz_svg(
    plan: TracedPlan, marks: Mapping[str, str], reasons: Mapping[str, str]
) -> str | None:
    """The plan drawn by Graphviz as SVG, when the ``dot`` program exists."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    text = plan.to_dot().rstrip()
    if not text.endswith("}"):
        return None
    extra = []
    for name, node in plan.nodes.items():
        tip = reasons.get(name) or _short_location(node.location)
        attrs = [f"tooltip={_dot_quote(tip)}"]
        mark = marks.get(name)
        if mark:
            attrs.append(f'style=filled, fillcolor="{_fill(mark)}"')
        extra.append(f"    {_dot_quote(name)} [{', '.join(attrs)}];")
    text = text[:-1] + "\n".join(extra) + "\n}\n"
    try:
        out = subprocess.run(
            [dot, "-Tsvg"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    start = out.stdout.find("<svg")
    if out.returncode != 0 or start < 0:
        return None
    return out.stdout[start:]


def plan_svg(
    plan: TracedPlan,
    marks: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
    *,
    engine: str = "auto",
) -> str:
    """The plan's DAG as an SVG document.

    Parameters
    ----------
    plan:
        The plan to draw.
    marks:
        Step-call name → ``"hit"``/``"execute"`` (from ``Plan.explain``) or a step-run status
        (``"cached"``, ``"executed"``, ``"failed"``, ``"skipped"``); sets each box's colour.
    reasons:
        Step-call name → text shown as the box's tooltip (e.g. why it will execute).
    engine:
        ``"graphviz"`` (needs the ``dot`` program), ``"builtin"`` (a layered layout drawn
        here, no dependencies), or ``"auto"``: Graphviz when ``dot`` is installed, else
        the built-in layout.
    """
    if engine not in ("auto", "graphviz", "builtin"):
        raise ValueError(f"engine must be 'auto', 'graphviz' or 'builtin', found {engine!r}")
    marks = marks or {}
    reasons = reasons or {}
    if engine != "builtin":
        svg = _graphviz_svg(plan, marks, reasons)
        if svg is not None:
            return svg
    return _layered_svg(plan, marks, reasons)


def _legend(plan: TracedPlan, marks: Mapping[str, str]) -> str:
    counts: dict[str, int] = {}
    for call in plan.calls():  # the user's step calls, as every count does
        mark = marks.get(call.name) or marks.get(call.node)
        if mark is None:
            continue
        label = _STYLE.get(mark, ("", mark))[1]
        counts[label] = counts.get(label, 0) + 1
    fills = {label: fill for fill, label in _STYLE.values()}
    items = [
        f"<span style='display:inline-block;margin-right:12px'>"
        f"<span style='display:inline-block;width:11px;height:11px;border:1px solid #555;"
        f"border-radius:2px;vertical-align:middle;background:{fills.get(label, _PLAIN)}'>"
        f"</span> {html.escape(label)} ({n})</span>"
        for label, n in counts.items()
    ]
    return f"<div style='font-size:12px;margin:4px 0'>{''.join(items)}</div>"


def plan_html(
    plan: TracedPlan,
    marks: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
    *,
    engine: str = "auto",
) -> str:
    """HTML picture of the plan (see :func:`plan_svg`), with a title and, if marked, a legend."""
    params = ", ".join(f"{k}={v!r}" for k, v in plan.params.items())
    title = (
        f"<div style='font-family:sans-serif;font-size:13px;margin-bottom:4px'>"
        f"<b>{html.escape(plan.pipeline)}</b>({html.escape(params)}) &middot; "
        f"{html.escape(plan.describe_calls())}</div>"
    )
    legend = _legend(plan, marks) if marks else ""
    svg = plan_svg(plan, marks, reasons, engine=engine)
    return f"<div class='mlflowkit-plan'>{title}{legend}{svg}</div>"


class PlanView:
    """A plan's DAG as a picture for notebooks, optionally marked by ``Plan.explain``.

    Returned by ``Plan.show(store)``. In Jupyter it renders as the DAG, each step call coloured
    *cached* or *will execute* (the tooltip says why); ``print()`` gives the explanation table.

    Attributes
    ----------
    plan:
        The plan drawn.
    explanation:
        The ``Plan.explain`` result the marks come from, or None for an unmarked picture.
    """

    def __init__(self, plan: TracedPlan, explanation: list[dict[str, Any]] | None = None) -> None:
        self.plan = plan
        self.explanation = explanation

    @property
    def marks(self) -> dict[str, str]:
        """Step-call name → ``"hit"`` or ``"execute"`` (empty without an explanation)."""
        return {e["step"]: e["action"] for e in self.explanation or []}

    @property
    def reasons(self) -> dict[str, str]:
        """Step-call name → why it hits or executes (empty without an explanation)."""
        return {e["step"]: e["why"] for e in self.explanation or []}

    def svg(self, engine: str = "auto") -> str:
        """The picture as an SVG document (save it to a ``.svg`` file, embed it in a page)."""
        return plan_svg(self.plan, self.marks, self.reasons, engine=engine)

    def _repr_html_(self) -> str:
        return plan_html(self.plan, self.marks, self.reasons)

    def __repr__(self) -> str:
        if self.explanation is None:
            return repr(self.plan)
        return str(self.explanation)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
_TABLE = "border-collapse:collapse;font-family:sans-serif;font-size:12px"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _row(cells: Iterable[str], fill: str = _PLAIN, head: bool = False) -> str:
    tag = "th" if head else "td"
    body = "".join(f"<{tag} style='{_CELL}'>{c}</{tag}>" for c in cells)
    return f"<tr style='background:{fill}'>{body}</tr>"


def run_html(run: Run) -> str:
    """An HTML table of a run's step calls: step, status, attempts, duration, output digest,
    and the last value of each metric a call logged (when any did).

    Internal nodes (``StepRun.internal``) are neither rows nor counted, unless one failed.
    """
    summary = describe_calls(count_calls(run.steps))
    steps = [s for s in run.steps if not s.internal or s.status == "failed"]
    record = run.record
    took = ""
    if record.finished_at and record.started_at:
        took = f" in {_duration(record.finished_at - record.started_at)}"
    store = run.store.url if run.store is not None else None
    where = f" &middot; store <code>{html.escape(str(store))}</code>" if store else ""
    failed = any(s.error for s in steps)
    measured = any(s.metric_log for s in steps)
    rows = [
        _row(
            ["step", "status", "attempts", "duration", "output digest"]
            + (["metrics"] if measured else [])
            + (["error"] if failed else []),
            head=True,
        )
    ]
    for s in steps:
        cells = [
            html.escape(s.name),
            html.escape(s.status),
            str(s.attempts),
            _duration(s.duration_s) if s.status in ("executed", "failed") else "",
            f"<code title='{html.escape(s.output_digest or '')}'>"
            f"{html.escape((s.output_digest or '')[:12])}</code>",
        ]
        if measured:
            cells.append(html.escape(", ".join(f"{k}={v:.4g}" for k, v in s.metrics.items())))
        if failed:
            cells.append(html.escape(s.error or ""))
        rows.append(_row(cells, _fill(s.status)))
    return (
        "<div class='mlflowkit-run'>"
        f"<div style='font-family:sans-serif;font-size:13px;margin-bottom:4px'>"
        f"<b>run {html.escape(run.id)}</b> &middot; {html.escape(record.pipeline)} &middot; "
        f"<b>{html.escape(run.status)}</b>{took} &middot; {html.escape(summary)}"
        f"{where}</div>"
        f"<table style='{_TABLE}'>{''.join(rows)}</table></div>"
    )


def explanation_html(explanation: Iterable[Mapping[str, Any]]) -> str:
    """An HTML table of ``Plan.explain``: step, cached or will execute, and why.

    Internal nodes (``getattr(explanation, "internal")``: items, attributes, gathers) are left
    out, as from every listing of step calls.
    """
    internal: frozenset[str] = getattr(explanation, "internal", frozenset())
    rows = [_row(["step", "action", "why"], head=True)]
    for e in explanation:
        if e.get("step") in internal:
            continue
        action = str(e.get("action", ""))
        label = _STYLE.get(action, ("", action))[1]
        rows.append(
            _row(
                [
                    html.escape(str(e.get("step", ""))),
                    html.escape(label),
                    html.escape(str(e.get("why", ""))),
                ],
                _fill(action),
            )
        )
    return f"<table class='mlflowkit-explain' style='{_TABLE}'>{''.join(rows)}</table>"
