"""Progress bars and notebook renderings of plans and runs.

Invariant: nothing here is imported by ``import mlflowkit``; rich is imported only when a
progress bar is actually shown. Progress defaults to on for a terminal or a notebook and off
otherwise (pipes, CI logs), unless asked for explicitly.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from mlflowkit.scheduler import Progress

if TYPE_CHECKING:
    from mlflowkit.plan import Plan
    from mlflowkit.run import Run

__all__ = ["RichProgress", "make_progress", "plan_html", "run_html"]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def make_progress(progress: bool | None) -> Progress:
    """A progress display: on when asked, or by default for a terminal or a notebook."""
    if progress is None:
        progress = _in_notebook() or sys.stderr.isatty()
    return RichProgress() if progress else Progress()


class RichProgress(Progress):
    """A rich progress bar counting executed, cached and failed step calls."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._counts = {"executed": 0, "cached": 0, "failed": 0, "skipped": 0}

    def start(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]mlflowkit[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("", total=total)

    def grow(self, extra: int) -> None:
        task = self._bar.tasks[0]
        self._bar.update(self._task, total=(task.total or 0) + extra)

    def advance(self, name: str, status: str) -> None:
        self._counts[status] = self._counts.get(status, 0) + 1
        c = self._counts
        desc = f"{name[:30]:<30} {c['executed']} run, {c['cached']} cached"
        if c["failed"]:
            desc += f", {c['failed']} failed"
        self._bar.update(self._task, advance=1, description=desc)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()


_STATUS_COLORS = {
    "cached": "#d4edda",
    "executed": "#cce5ff",
    "failed": "#f8d7da",
    "skipped": "#eeeeee",
    "hit": "#d4edda",
    "execute": "#fff3cd",
}


def plan_svg(plan: Plan, marks: dict[str, str] | None = None) -> str | None:
    """The plan drawn by Graphviz as SVG, when the ``dot`` program exists."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    text = plan.to_dot()
    if marks:
        extra = "".join(
            f'    "{n}" [style=filled, fillcolor="{_STATUS_COLORS.get(s, "#ffffff")}"];\n'
            for n, s in marks.items()
        )
        text = text.rstrip().rstrip("}") + extra + "}\n"
    try:
        out = subprocess.run(
            [dot, "-Tsvg"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def plan_html(plan: Plan, marks: dict[str, str] | None = None) -> str:
    """HTML picture of the plan: SVG through Graphviz, else an offline layered HTML drawing."""
    svg = plan_svg(plan, marks)
    if svg is not None:
        return f"<div><b>{html.escape(plan.pipeline)}</b>{svg[svg.find('<svg') :]}</div>"
    # layered layout without network or graphviz: one row per depth
    depth: dict[str, int] = {}
    for name, node in plan.nodes.items():
        depth[name] = 1 + max((depth[d] for d in node.deps), default=-1)
    rows: dict[int, list[str]] = {}
    for name, d in depth.items():
        rows.setdefault(d, []).append(name)
    parts = [f"<div class='mlflowkit-plan'><b>{html.escape(plan.pipeline)}</b>"]
    for d in sorted(rows):
        cells = []
        for name in rows[d]:
            color = _STATUS_COLORS.get((marks or {}).get(name, ""), "#ffffff")
            deps = ", ".join(plan.nodes[name].deps)
            title = html.escape(f"after: {deps}" if deps else "no inputs")
            cells.append(
                f"<span title='{title}' style='display:inline-block;margin:3px;padding:3px 8px;"
                f"border:1px solid #888;border-radius:4px;background:{color}'>"
                f"{html.escape(name)}</span>"
            )
        parts.append("<div>" + ("&darr; " if d else "") + "".join(cells) + "</div>")
    parts.append("</div>")
    return "".join(parts)


def run_html(run: Run) -> str:
    """An HTML table of a run's step calls."""
    rows = []
    for s in run.steps:
        color = _STATUS_COLORS.get(s.status, "#ffffff")
        rows.append(
            f"<tr style='background:{color}'><td>{html.escape(s.name)}</td><td>{s.status}</td>"
            f"<td>{s.attempts}</td><td>{s.duration_s * 1000:.1f} ms</td>"
            f"<td><code>{(s.output_digest or '')[:12]}</code></td></tr>"
        )
    return (
        f"<div><b>run {html.escape(run.id)}</b> — {run.status}<table>"
        "<tr><th>step</th><th>status</th><th>attempts</th><th>duration</th>"
        "<th>output digest</th></tr>" + "".join(rows) + "</table></div>"
    )
