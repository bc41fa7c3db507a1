"""Presenting results: the console table, JSON lines, and the generated part of the docs page.

One table, one line per workload variant and tool: median, range, unit, repetitions, and on
mlflowkit's lines the ratio to the best peer and the target's verdict. Notes (why a tool is not
applicable, an error, a shortened series) are numbered footnotes under the table. A second
table lists every target of the run (``benchmarks.targets``): mlflowkit's median, the peer's
median from the same run, their ratio, the bound, and met, MISSED or not assessed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from benchmarks.core import Row
from benchmarks.targets import TARGETS, Assessment, assess, assess_all

__all__ = [
    "BEGIN_MARK",
    "END_MARK",
    "markdown_section",
    "text_report",
    "update_markdown",
    "write_json_lines",
]

#: typographic signs of the tables, written as escapes (they look like "x" and "-" in code)
TIMES = "\u00d7"
DASH = "\u2013"

BEGIN_MARK = "<!-- BEGIN GENERATED RESULTS (python -m benchmarks --markdown ...) -->"
END_MARK = "<!-- END GENERATED RESULTS -->"

_HEADERS = (
    "workload",
    "variant",
    "tool",
    "median",
    f"min{DASH}max",
    "unit",
    "reps",
    "mlflowkit / best peer",
    "target",
)


def fmt(x: float | None) -> str:
    """A number with about three significant digits."""
    if x is None:
        return DASH
    if x == float("inf"):
        return "inf"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _ratio_cell(row: Row) -> str:
    if row.ratio is None:
        return ""
    return f"{row.ratio:.2f}{TIMES} vs {row.best_peer}"


def _target_cell(row: Row, assessments: dict[str, Assessment]) -> str:
    if row.kind != "mlflowkit":
        return ""
    found = assessments.get(row.row_id)
    if found is None or not found.shown_on(row):
        return ""
    if found.ratio is None:
        return f"{found.target.text()}: {found.verdict}"
    return f"{found.target.text()}: {found.ratio:.2f}{TIMES}, {found.verdict}"


def _cells(rows: list[Row]) -> tuple[list[list[str]], list[str]]:
    """Table cells per row, and the footnotes they refer to."""
    notes: list[str] = []
    table: list[list[str]] = []
    previous: tuple[str, str] | None = None
    assessments = {a.target.row_id: a for a in assess_all(rows)}
    for row in rows:
        mark = ""
        if row.notes:
            if row.notes not in notes:
                notes.append(row.notes)
            mark = f" [{notes.index(row.notes) + 1}]"
        if row.status == "ok":
            median = fmt(row.median)
            spread = f"{fmt(row.min)}{DASH}{fmt(row.max)}"
        else:
            median, spread = row.status, ""
        where = (f"{row.workload} {row.name}", row.variant)
        shown = ("", "") if where == previous else where
        previous = where
        table.append(
            [
                shown[0],
                shown[1],
                row.tool + mark,
                median,
                spread,
                row.unit,
                str(len(row.values)) if row.status == "ok" else "",
                _ratio_cell(row),
                _target_cell(row, assessments),
            ]
        )
    return table, notes


def _median_cell(row: Row | None) -> str:
    if row is None:
        return "not run"
    if row.status != "ok":
        return row.status
    return f"{fmt(row.median)} {row.unit}"


def _target_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for found in assess_all(rows):
        target = found.target
        shown = next(r for r in rows if r.row_id == target.row_id)
        out.append(
            [
                target.key,
                f"{shown.workload} {shown.name} {DASH} {shown.variant}",
                target.text(),
                _median_cell(found.mine),
                found.peer_tool,
                _median_cell(found.peer),
                DASH if found.ratio is None else f"{found.ratio:.2f}{TIMES}",
                found.verdict,
                target.context,
            ]
        )
    return out


_TARGET_HEADERS = (
    "target",
    "metric",
    "bound (mlflowkit / peer)",
    "mlflowkit",
    "peer",
    "peer median",
    "ratio",
    "verdict",
    "context",
)


def _plain(headers: Iterable[str], table: list[list[str]]) -> str:
    headers = list(headers)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in table:
        if r[0]:
            lines.append("")
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _md(headers: Iterable[str], table: list[list[str]]) -> str:
    headers = list(headers)
    esc = [[c.replace("|", "\\|") for c in r] for r in table]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


def text_report(rows: list[Row], machine: dict[str, Any]) -> str:
    """The console report: results table, footnotes, targets."""
    table, notes = _cells(rows)
    parts = [_machine_line(machine), "", _plain(_HEADERS, table)]
    if notes:
        parts += ["", "Notes:"] + [f"  [{i}] {n}" for i, n in enumerate(notes, 1)]
    targets = _target_rows(rows)
    if targets:
        parts += [
            "",
            "Targets (mlflowkit's median over a peer's, both from this run):",
            _plain(_TARGET_HEADERS, targets),
        ]
    return "\n".join(parts)


def _machine_line(machine: dict[str, Any]) -> str:
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
        f"{machine['os']}, {machine['python']}"
    )


def markdown_section(rows: list[Row], machine: dict[str, Any], command: str) -> str:
    """The generated part of ``docs/benchmarks.md`` (between the markers)."""
    table, notes = _cells(rows)
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    parts = [
        BEGIN_MARK,
        "",
        "## Latest results",
        "",
        f"Generated by `{command}` on {machine['date']}.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} |",
        f"| cores | {machine['cores']} |",
        f"| memory | {machine['ram_gib']} GiB |",
        f"| OS | {machine['os']} |",
        f"| Python | {machine['python']} |",
        f"| packages | {packages} |",
        "",
        "### Results",
        "",
        _md(_HEADERS, table),
    ]
    if notes:
        parts += ["", "Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    targets = _target_rows(rows)
    if targets:
        parts += [
            "",
            "### Targets",
            "",
            "mlflowkit's median over a peer's median, both from this run.",
            "",
            _md(_TARGET_HEADERS, targets),
        ]
    parts += ["", END_MARK, ""]
    return "\n".join(parts)


def update_markdown(path: str, section: str) -> None:
    """Replace the generated section of ``path`` (or append it), keeping the rest of the page."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n"
    start, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(END_MARK) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def replace_marked(path: str, begin: str, end: str, body: str) -> None:
    """Put ``body`` between the ``begin`` and ``end`` marker lines of ``path`` (appended with
    its markers when the page has none), keeping the rest of the page."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    block = f"{begin}\n{body}\n{end}"
    start, stop = text.find(begin), text.find(end)
    if start != -1 and stop > start:
        text = text[:start] + block + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def row_record(row: Row, rows: list[Row]) -> dict[str, Any]:
    """One JSON line: a measurement (a workload variant for one tool).

    On mlflowkit's lines, the target of the metric assessed against ``rows`` (the run's rows,
    which hold the peer's): the bound, the peer and its median, the ratio, ``target_met``
    (None when not assessed) and the verdict.
    """
    record: dict[str, Any] = {
        "type": "result",
        "workload": row.workload,
        "workload_name": row.name,
        "variant": row.variant,
        "row_id": row.row_id,
        "tool": row.tool,
        "kind": row.kind,
        "status": row.status,
        "n": row.n,
        "unit": row.unit,
        "median": row.median,
        "min": row.min,
        "max": row.max,
        "reps": len(row.values),
        "values": row.values,
        "notes": row.notes,
        "higher_is_better": row.higher_is_better,
    }
    if row.kind == "mlflowkit":
        record["ratio_to_best_peer"] = row.ratio
        record["best_peer"] = row.best_peer
        target = TARGETS.get(row.row_id)
        found = None if target is None else assess(target, rows)
        if found is not None and found.shown_on(row):
            record["target"] = {
                "key": found.target.key,
                "bound": found.target.bound,
                "factor": found.target.factor,
                "peer": found.target.peer,
                "text": found.target.text(),
            }
            record["target_peer"] = found.peer_tool
            record["target_peer_median"] = None if found.peer is None else found.peer.median
            record["target_ratio"] = found.ratio
            record["target_met"] = found.met
            record["target_verdict"] = found.verdict
    return record


def write_json_lines(path: str, rows: list[Row], header: dict[str, Any]) -> None:
    """A header line (machine, settings) and one line per measurement."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"type": "machine", **header}, ensure_ascii=False) + "\n")
        for row in rows:
            f.write(json.dumps(row_record(row, rows), ensure_ascii=False) + "\n")
