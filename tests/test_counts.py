"""One count of a pipeline's step calls everywhere: the plan, its text and picture, the run's
summary, table and progress bar, and the command line. Internal nodes (items of an unpacked
tuple, attributes, the gathering of a fan-out) are counted nowhere, and the words are the same
everywhere: *executed* and *cached*."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mlflowkit as mk
from mlflowkit.cli import main
from mlflowkit.display import plan_html, run_html
from mlflowkit.outcomes import Progress
from tests.resources import counted

ROOT = Path(__file__).resolve().parent.parent
TARGET = str(ROOT / "tests" / "resources" / "counted.py") + ":counted"
N = counted.CALLS


class Recorder(Progress):
    def __init__(self) -> None:
        self.total = 0
        self.ended: list[tuple[str, str]] = []

    def start(self, total: int) -> None:
        self.total = total

    def grow(self, extra: int) -> None:
        self.total += extra

    def advance(self, name: str, status: str) -> None:
        self.ended.append((name, status))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    import mlflowkit.display

    bar = Recorder()
    monkeypatch.setattr(mlflowkit.display, "make_progress", lambda progress: bar)
    return bar


def test_the_plan_counts_the_users_step_calls() -> None:
    plan = counted.counted.plan()
    calls = plan.calls()
    assert [c.name for c in calls] == [
        "pair",
        "add[0]",
        "add[1]",
        "add[2]",
        "add-2[0]",
        "add-2[1]",
        "add-2[2]",
        "total",
        "shape_of",
    ]
    assert all(c.sized for c in calls)
    assert repr(plan) == f"<mk.Plan counted ({N} step calls)>"
    assert f"{N} step calls</div>" in plan_html(plan)
    assert len(plan.nodes) > N  # the internal nodes are there, just not counted


def test_a_fan_out_sized_at_run_time_is_said_so() -> None:
    plan = counted.sized_at_run_time.plan()
    assert [(c.name, c.sized) for c in plan.calls()] == [
        ("numbers", True),
        ("add[*]", False),
        ("total", True),
    ]
    assert (
        repr(plan) == "<mk.Plan sized_at_run_time (2 step calls and a fan-out sized at run time)>"
    )
    run = plan.run(store="memory://", progress=False)
    assert repr(run).endswith(": 6 step calls, 6 executed, 0 cached>")  # 4 elements


def test_the_run_and_its_renderings_count_the_same(store: mk.Store, recorder: Recorder) -> None:
    plan = counted.counted.plan()
    run = plan.run(store=store, progress=True)
    calls = [s for s in run.steps if not s.internal]
    assert [s.name for s in calls] == [c.name for c in plan.calls()]
    assert repr(run).endswith(f": {N} step calls, {N} executed, 0 cached>")
    assert (recorder.total, len(recorder.ended)) == (N, N)
    assert sorted(name for name, _ in recorder.ended) == sorted(c.name for c in plan.calls())
    html = run_html(run)
    assert f"{N} executed, 0 cached" in html
    assert html.count("<tr") == N + 1  # the header, then one row per step call
    assert ">pair.0<" not in html and ">add-2<" not in html

    again = plan.run(store=store, progress=True)
    assert repr(again).endswith(f": {N} step calls, 0 executed, {N} cached>")
    assert f"0 executed, {N} cached" in run_html(again)
    assert recorder.total == N and recorder.ended[N:] == [
        (n, "cached") for n, _ in recorder.ended[:N]
    ]


def test_the_command_line_counts_the_same(tmp_path: Path) -> None:
    runner = CliRunner()
    url = str(tmp_path / "s")
    text = runner.invoke(main, ["plan", TARGET])
    assert text.exit_code == 0, text.output
    assert len(text.output.splitlines()) == N
    assert "total  <- add-2[0..2]\n" in text.output and "pair.0" not in text.output

    first = runner.invoke(main, ["run", TARGET, "--store", url])
    assert first.exit_code == 0, first.output
    assert f": {N} executed, 0 cached\n" in first.output
    second = runner.invoke(main, ["run", TARGET, "--store", url])
    assert f": 0 executed, {N} cached\n" in second.output

    listing = " ".join(runner.invoke(main, ["runs", "list", "--store", url]).output.split())
    assert f"{N} executed, 0 cached" in listing and f"0 executed, {N} cached" in listing
    assert " run " not in listing.replace("runs", "")  # "executed", not "run"

    with mk.Store(url) as store:
        run_id = store.runs()[0].id
    shown = runner.invoke(main, ["runs", "show", run_id, "--store", url])
    assert f"{N} step calls: 0 executed, {N} cached" in shown.output
    rows = [li for li in shown.output.splitlines() if re.match(r"│ \S+ +│ cached", li)]
    assert len(rows) == N
    every = runner.invoke(main, ["runs", "show", run_id, "--store", url, "--all"])
    assert "pair.0" in every.output and "add-2 " in every.output

    explained = runner.invoke(main, ["plan", TARGET, "--explain", "--store", url])
    assert explained.exit_code == 0, explained.output
    assert " hit " not in explained.output and "cached" in explained.output
    assert "pair.0" not in explained.output


def test_explanations_and_pictures_leave_internal_nodes_out(store: mk.Store) -> None:
    plan = counted.counted.plan()
    plan.run(store=store, progress=False)
    explanation: Any = plan.explain(store)
    assert {e["step"] for e in explanation} == set(plan.nodes)  # the data keeps every node
    table = explanation._repr_html_()
    assert ">pair.0<" not in table and ">pair<" in table
    html = counted.counted.plan(n=4).show(store)._repr_html_()
    assert f"will execute ({N})" in html  # the legend counts step calls


def test_the_notebooks_count_and_word_step_calls_as_everywhere_else() -> None:
    import json

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            text = "".join(cell["source"])
            if cell["cell_type"] == "code":  # run.steps holds internal nodes too
                assert not re.search(r"len\(\w+\.steps\)", text), (path.name, i)
            else:
                assert not re.search(r"cache hits?\b|everything hits", text), (path.name, i)
