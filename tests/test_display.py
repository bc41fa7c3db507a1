"""Notebook renderings of plans, runs and explanations, and the progress displays."""

from __future__ import annotations

import itertools
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.display import (
    NotebookProgress,
    PlanView,
    RichProgress,
    explanation_html,
    in_notebook,
    make_progress,
    plan_html,
    plan_svg,
    run_html,
)
from mlflowkit.outcomes import Progress

ROOT = Path(__file__).resolve().parents[1]


@mk.step
def make_data(n: int) -> tuple[list[float], list[float]]:
    return [float(i) for i in range(n)], [2.0 * i for i in range(n)]


@mk.step
def fit(x: list[float], y: list[float], alpha: float = 1.0) -> float:
    return sum(b / (a + alpha) for a, b in zip(x, y, strict=True))


@mk.step
def score(w: float, x: list[float]) -> float:
    return w * len(x)


@mk.step
def boom(w: float) -> float:
    raise ValueError("no good")


@mk.pipeline
def train(n: int = 4, alpha: float = 1.0) -> float:
    x, y = make_data(n)
    return score(fit(x, y, alpha=alpha), x)


@mk.step
def shrink(w: float, alpha: float) -> float:
    return w / (1.0 + alpha)


@mk.pipeline
def sweep(n: int = 3, k: int = 10) -> list[float]:
    x, y = make_data(n)
    return shrink.map(alpha=[float(a) for a in range(1, k + 1)], w=fit(x, y))


@mk.pipeline
def failing(n: int = 3) -> float:
    x, y = make_data(n)
    return boom(fit(x, y))


def _boxes(svg: str) -> list[tuple[float, float, float, str]]:
    """(x, y, width, label) of each drawn step call."""
    found = []
    pattern = r"<rect x='([\d.]+)' y='([\d.]+)' width='([\d.]+)'[^>]*/><text[^>]*>([^<]*)</text>"
    for x, y, w, label in re.findall(pattern, svg):
        found.append((float(x), float(y), float(w), label))
    return found


# ---------------------------------------------------------------------------------------------
# pictures of plans
# ---------------------------------------------------------------------------------------------
def test_builtin_svg_draws_every_step_call_in_layers() -> None:
    plan = train.plan()
    svg = plan_svg(plan, engine="builtin")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    boxes = {label: (x, y, w) for x, y, w, label in _boxes(svg)}
    assert set(boxes) == set(plan.steps)
    for name, node in plan.nodes.items():  # every edge points down
        for dep in node.deps:
            assert boxes[dep][1] < boxes[name][1]
    rows: dict[float, list[tuple[float, float]]] = {}
    for x, y, w in boxes.values():
        rows.setdefault(y, []).append((x, w))
    for row in rows.values():  # boxes of one layer do not overlap
        row.sort()
        for (x1, w1), (x2, _) in itertools.pairwise(row):
            assert x1 + w1 <= x2
    assert svg.count("stroke='#888'") == sum(len(n.deps) for n in plan.nodes.values())


def test_marks_colour_the_boxes_and_tooltips_give_the_reason() -> None:
    plan = train.plan()
    marks = dict.fromkeys(plan.steps, "hit") | {"fit": "execute", "score": "execute"}
    svg = plan_svg(plan, marks, {"fit": "param 'alpha' changed"}, engine="builtin")
    assert svg.count("data-mark='cached'") == len(plan.steps) - 2
    assert svg.count("data-mark='execute'") == 2
    assert "param &#x27;alpha&#x27; changed" in svg
    html = plan_html(plan, marks)  # the legend counts step calls: make_data, fit, score
    assert "cached (1)" in html and "will execute (2)" in html
    assert "<b>train</b>(n=4, alpha=1.0)" in html


def test_labels_are_escaped() -> None:
    odd = mk.step(name="a<b&c")(make_data.fn)

    @mk.pipeline
    def strange() -> Any:
        return odd(2)

    svg = plan_svg(strange.plan(), engine="builtin")
    assert "a&lt;b&amp;c" in svg and "a<b" not in svg


def test_large_fan_outs_collapse_into_one_box() -> None:
    plan = sweep.plan(k=10)
    labels = [label for *_, label in _boxes(plan_svg(plan, engine="builtin"))]
    assert "shrink[0..9]" in labels
    assert not any(re.fullmatch(r"shrink\[\d+\]", label) for label in labels)
    small = [label for *_, label in _boxes(plan_svg(sweep.plan(k=3), engine="builtin"))]
    assert {"shrink[0]", "shrink[1]", "shrink[2]"} <= set(small)


def test_huge_plans_are_summarized_not_drawn() -> None:
    @mk.step
    def inc(x: int) -> int:
        return x + 1

    @mk.pipeline
    def chain(n: int = 450) -> int:
        x = inc(0)
        for _ in range(n):
            x = inc(x)
        return x

    svg = plan_svg(chain.plan(), engine="builtin")
    assert "too many to draw" in svg and "plan.to_dot()" in svg


def test_graphviz_is_used_when_dot_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen.dot"
    fake = tmp_path / "dot"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"open({str(seen)!r}, 'w').write(sys.stdin.read())\n"
        'print(\'<?xml version="1.0"?><svg id="from-graphviz"></svg>\')\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    plan = train.plan()
    svg = plan_svg(plan, {"fit": "execute"}, {"fit": "param changed"})
    assert svg.startswith('<svg id="from-graphviz"')
    dot = seen.read_text()
    assert dot.startswith('digraph "train"') and dot.rstrip().endswith("}")
    assert '"fit" [tooltip="param changed", style=filled, fillcolor="#fff3cd"];' in dot
    assert "from-graphviz" not in plan_svg(plan, engine="builtin")


def test_graphviz_engine_falls_back_without_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert "mlflowkit-dag" in plan_svg(train.plan(), engine="graphviz")
    with pytest.raises(ValueError, match="engine"):
        plan_svg(train.plan(), engine="png")


def test_plan_renders_as_html_in_notebooks() -> None:
    html = train.plan()._repr_html_()
    assert "mlflowkit-plan" in html and "<svg" in html


def test_plan_show_marks_calls_from_explain(store: mk.Store) -> None:
    unmarked = train.plan().show()
    assert isinstance(unmarked, PlanView) and unmarked.explanation is None
    assert unmarked.marks == {} and repr(unmarked) == repr(train.plan())
    train.plan().run(store=store, progress=False)
    view = train.plan(alpha=2.0).show(store)
    assert view.marks["make_data"] == "hit" and view.marks["fit"] == "execute"
    assert "alpha" in view.reasons["fit"]
    html = view._repr_html_()
    assert "will execute (2)" in html and "cached (1)" in html
    assert "fit" in repr(view) and "execute" in repr(view)
    assert view.svg(engine="builtin").startswith("<svg")


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def test_run_renders_as_a_table_of_step_calls(store: mk.Store) -> None:
    run = train.plan().run(store=store, progress=False)
    html = run._repr_html_()
    assert html == run_html(run)
    for s in run.steps:  # a row per step call; internal nodes (make_data.0) are not
        assert (f">{s.name}<" in html) is not s.internal
        assert ((s.output_digest or "")[:12] in html) is not s.internal
    assert "<th style" in html and ">attempts<" in html and ">output digest<" in html
    assert f"run {run.id}" in html and "3 executed, 0 cached" in html
    again = train.plan().run(store=store, progress=False)
    assert "0 executed, 3 cached" in again._repr_html_()
    assert ">error<" not in html


def test_a_failed_run_table_shows_the_error(store: mk.Store) -> None:
    with pytest.raises(mk.RunFailed) as info:
        failing.plan().run(store=store, progress=False)
    html = run_html(info.value.run)
    assert ">error<" in html and "ValueError: no good" in html and ">failed<" in html


def test_explanations_render_as_tables(store: mk.Store) -> None:
    explanation = train.plan().explain(store)
    html = explanation._repr_html_()  # type: ignore[attr-defined]
    assert html == explanation_html(explanation)
    assert html.count("<tr") == len(train.plan().calls()) + 1  # no row for make_data.0
    assert "will execute" in html and "no earlier run" in html


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------
def test_progress_choice_outside_a_notebook() -> None:
    assert not in_notebook()
    assert type(make_progress(False)) is Progress
    assert isinstance(make_progress(True), RichProgress)


def test_notebook_progress_counts_and_draws() -> None:
    bar = NotebookProgress()  # not started: nothing is displayed, counts still kept
    bar.grow(3)
    for name, status in [("a", "executed"), ("b", "cached"), ("c", "failed")]:
        bar.advance(name, status)
    bar.finish()
    html = bar.html()
    assert "3/3 step calls" in html and "1 executed, 1 cached, 1 failed" in html
    assert "done" in html and "width:100%" in html


def test_rich_progress_runs_a_plan(store: mk.Store) -> None:
    run = train.plan().run(store=store, progress=True)
    assert run.status == "succeeded"


def test_a_run_nobody_watches_never_imports_the_display_code(tmp_path: Path) -> None:
    # A script with default arguments whose stderr is a pipe: no progress, so the display
    # module (~10 ms of imports) must not be loaded to find that out.
    code = (
        "import sys, mlflowkit as mk\n"
        "@mk.step\n"
        "def one() -> int:\n"
        "    return 1\n"
        "@mk.pipeline\n"
        "def p() -> int:\n"
        "    return one()\n"
        f"run = p.plan().run(store={str(tmp_path / 'store')!r})\n"
        "assert run.output == 1\n"
        "print('mlflowkit.display' in sys.modules)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"
