"""The benchmark targets are ratios to a peer of the same run: met, missed, or not assessed.

Hand-made rows stand in for a run, so every verdict here follows from numbers the test chose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import build_groups, select_workloads
from benchmarks.core import Config, Row
from benchmarks.report import text_report, write_json_lines
from benchmarks.targets import BEST_PEER, TARGETS, Target, assess, assess_all

MACHINE = {"cpu": "test CPU", "cores": 2, "ram_gib": 4, "os": "test OS", "python": "3.x"}


def row(
    tool: str,
    median: float | None,
    *,
    row_id: str = "chain/persisted",
    kind: str = "peer",
    status: str = "ok",
    rate: bool = False,
) -> Row:
    """A row of one tool on one metric; ``median=None`` for a row without a measurement."""
    values = [] if median is None else [median * 0.9, median, median * 1.2]
    return Row(
        workload="A",
        name="chain",
        variant="every output persisted, 1000 steps",
        row_id=row_id,
        tool=tool,
        kind=kind,
        n=1000,
        unit="GB/s" if rate else "µs/step",
        status=status,
        values=values,
        higher_is_better=rate,
    )


def mk_row(median: float | None, **kw: object) -> Row:
    return row("mlflowkit", median, kind="mlflowkit", **kw)  # type: ignore[arg-type]


TIME = Target("T", "chain/persisted", "<=", 0.5, "joblib.Memory")
RATE = Target("R", "hash/throughput", ">=", 0.9, "blake3 (all threads)")


def test_a_time_target_is_met_at_or_under_its_factor_of_the_named_peer() -> None:
    rows = [mk_row(150.0), row("joblib.Memory", 400.0), row("hamilton", 100.0)]
    found = assess(TIME, rows)
    assert found.ratio == pytest.approx(150 / 400)
    assert found.met is True and found.verdict == "met"
    assert found.peer is not None and found.peer.tool == "joblib.Memory"  # named, not the best
    assert found.mine is rows[0] and found.peer_tool == "joblib.Memory"
    # exactly on the bound is met
    assert assess(TIME, [mk_row(200.0), row("joblib.Memory", 400.0)]).met is True


def test_a_time_target_over_its_factor_is_missed() -> None:
    found = assess(TIME, [mk_row(570.0), row("joblib.Memory", 375.0)])
    assert found.ratio == pytest.approx(570 / 375)
    assert found.met is False and found.verdict == "MISSED"


@pytest.mark.parametrize(
    "peer_rows",
    [
        [],  # left out by --tools
        [row("joblib.Memory", None, status="n/a")],
        [row("joblib.Memory", None, status="error")],
        [row("joblib.Memory", None, status="timeout")],
        [row("joblib.Memory", 400.0, row_id="chain/orchestration")],  # another metric's row
        [row("joblib.Memory", 400.0, kind="reference")],  # a yardstick is never a peer
    ],
)
def test_a_peer_not_measured_in_the_run_leaves_the_target_not_assessed(
    peer_rows: list[Row],
) -> None:
    # mlflowkit is fast enough for any peer, yet nothing is claimed without one
    found = assess(TIME, [mk_row(1.0), row("hamilton", 50.0), *peer_rows])
    assert found.met is None and found.ratio is None and found.peer is None
    assert found.verdict == "not assessed (peer joblib.Memory not measured)"


def test_mlflowkit_not_measured_is_not_assessed_either() -> None:
    found = assess(TIME, [mk_row(None, status="error"), row("joblib.Memory", 400.0)])
    assert found.met is None and found.ratio is None
    assert found.verdict == "not assessed (mlflowkit not measured: error)"
    absent = assess(TIME, [row("joblib.Memory", 400.0)])
    assert absent.verdict == "not assessed (mlflowkit not measured: not run)"


def test_best_peer_is_the_fastest_measured_peer_never_a_yardstick() -> None:
    target = Target("B", "chain/persisted", "<=", 0.5, BEST_PEER)
    rows = [
        mk_row(30.0),
        row("dask", 120.0),
        row("hamilton", 80.0),
        row("redun", None, status="error"),
        row("memory bandwidth", 1.0, kind="reference"),
    ]
    found = assess(target, rows)
    assert found.peer_tool == "hamilton" and found.ratio == pytest.approx(30 / 80)
    assert found.met is True
    assert target.text() == "\u2264 0.5\u00d7 best peer"
    alone = assess(target, [mk_row(30.0), row("memory bandwidth", 1.0, kind="reference")])
    assert alone.met is None and alone.verdict == "not assessed (no peer measured)"
    assert alone.peer_tool == BEST_PEER


def test_a_rate_target_is_a_lower_bound() -> None:
    def rates(mine: float, blake3: float, xxh3: float = 30.0) -> list[Row]:
        kw = {"row_id": "hash/throughput", "rate": True}
        return [
            mk_row(mine, **kw),
            row("blake3 (all threads)", blake3, **kw),  # type: ignore[arg-type]
            row("xxhash (xxh3_64)", xxh3, **kw),  # type: ignore[arg-type]
        ]

    met = assess(RATE, rates(14.0, 15.0))
    assert met.ratio == pytest.approx(14 / 15) and met.met is True
    missed = assess(RATE, rates(12.0, 15.0))
    assert missed.ratio == pytest.approx(0.8) and missed.met is False
    assert RATE.text() == "\u2265 0.9\u00d7 blake3 (all threads)"
    # the best peer of a rate is the highest one
    best = Target("E", "hash/throughput", ">=", 0.9, BEST_PEER)
    assert assess(best, rates(14.0, 15.0)).peer_tool == "xxhash (xxh3_64)"
    assert assess(best, rates(14.0, 15.0)).met is False  # 14 / 30


def test_a_target_refuses_a_bound_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="bound must be"):
        Target("X", "chain/persisted", "<", 0.5, BEST_PEER)
    with pytest.raises(ValueError, match="factor must be positive"):
        Target("X", "chain/persisted", "<=", 0, BEST_PEER)


def test_only_the_metrics_of_the_run_have_targets() -> None:
    rows = [mk_row(150.0), row("joblib.Memory", 400.0)]
    assert [a.target.key for a in assess_all(rows)] == ["A'"]
    assert assess_all([]) == []


def test_every_target_names_a_metric_and_a_peer_of_the_workloads() -> None:
    cfg = Config.full()
    groups = [g for g, _ in build_groups(cfg, select_workloads(None), [])]
    metrics = {m.row_id: (m, g) for g in groups for m in g.metrics}
    for target in TARGETS.values():
        assert target.row_id in metrics, target
        metric, group = metrics[target.row_id]
        assert (target.bound == ">=") == metric.higher_is_better, target
        assert any(c.kind == "mlflowkit" for c in group.cases), target
        if target.peer != BEST_PEER:
            peers = {c.tool for c in group.cases if c.kind == "peer"}
            assert target.peer in peers, (target, peers)


def test_the_report_and_json_lines_show_both_medians_the_ratio_and_the_verdict(
    tmp_path: Path,
) -> None:
    rows = [
        mk_row(570.0),
        row("joblib.Memory", 375.0),
        mk_row(20.0, row_id="rerun/run"),
        row("hamilton (with_cache)", 200.0, row_id="rerun/run"),
    ]
    text = text_report(rows, MACHINE)
    lines = text.splitlines()
    (a_line,) = [line for line in lines if line.startswith("A'  ")]
    for cell in ("\u2264 0.5\u00d7 joblib.Memory", "570 µs/step", "375 µs/step", "1.52\u00d7"):
        assert cell in a_line, (cell, a_line)
    assert "MISSED" in a_line
    (c_line,) = [line for line in lines if line.startswith("C  ")]
    assert "not assessed (peer joblib.Memory not measured)" in c_line and "not run" in c_line

    out = tmp_path / "results.jsonl"
    write_json_lines(str(out), rows, {"cpu": "test CPU"})
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert records[0]["type"] == "machine"
    mine = {r["row_id"]: r for r in records[1:] if r["kind"] == "mlflowkit"}
    persisted = mine["chain/persisted"]
    assert persisted["target"]["factor"] == 0.5 and persisted["target"]["bound"] == "<="
    assert persisted["target_peer"] == "joblib.Memory"
    assert persisted["target_peer_median"] == 375.0
    assert persisted["target_ratio"] == pytest.approx(570 / 375)
    assert persisted["target_met"] is False and persisted["target_verdict"] == "MISSED"
    rerun = mine["rerun/run"]
    assert rerun["target_met"] is None and rerun["target_peer_median"] is None
    assert all("target" not in r for r in records[1:] if r["kind"] == "peer")


def test_the_first_mlflowkit_row_of_a_metric_is_the_one_assessed() -> None:
    rows = [mk_row(570.0), row("joblib.Memory", 375.0), mk_row(100.0)]
    found = assess(TIME, rows)
    assert found.mine is rows[0] and found.met is False


def test_the_fan_out_targets_are_assessed_on_the_persisted_defaults() -> None:
    """The threads and processes groups also show ``cache=False`` steps, after the defaults."""
    from benchmarks.core import Config
    from benchmarks.workloads import fanout

    for group in fanout.groups(Config.quick_run())[:2]:
        mine = [c for c in group.cases if c.kind == "mlflowkit"]
        assert [c.params.get("persist", True) for c in mine] == [True, False], group.variant


def test_only_the_assessed_mlflowkit_row_carries_the_target(tmp_path: Path) -> None:
    rows = [
        mk_row(570.0, row_id="fanout/threads"),
        row("mlflowkit (threads, cache=False)", 16.0, row_id="fanout/threads", kind="mlflowkit"),
        row("concurrent.futures (threads)", 10.0, row_id="fanout/threads"),
    ]
    text = text_report(rows, MACHINE)
    assert text.count("57.00\u00d7, MISSED") == 1  # on the persisted row, not the cache=False one
    path = tmp_path / "b.jsonl"
    write_json_lines(str(path), rows, MACHINE)
    lines = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    assert [("target" in x) for x in lines] == [True, False, False]
