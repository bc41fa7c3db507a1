"""Lineage graphs built from run records alone."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from mlflowkit.lineage import build_lineage
from mlflowkit.records import RunRecord, StepRun


def _step(name: str, out: str | None, status: str = "executed", **inputs: str) -> StepRun:
    return StepRun(
        name=name,
        key=f"key-{name}-{out}",
        status=status,  # type: ignore[arg-type]
        output_digest=out,
        step=f"pkg.mod:{name}",
        inputs=dict(inputs),
        duration_s=0.5,
    )


def _records() -> list[RunRecord]:
    run1 = RunRecord(
        id="run1",
        pipeline="pkg.mod:train",
        status="succeeded",
        steps=[
            _step("load", "D", n="N"),
            _step("fit", "M1", X="D", alpha="A1"),
            _step("report", "R1", model="M1"),
        ],
    )
    run2 = RunRecord(
        id="run2",
        pipeline="pkg.mod:train",
        status="failed",
        steps=[
            _step("load", "D", status="cached", n="N"),
            _step("fit", "M2", X="D", alpha="A2"),
            _step("score", None, status="failed", model="M2"),
        ],
    )
    return [run1, run2]


def test_upstream_only_across_runs() -> None:
    g = build_lineage(_records(), "M2")
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == {
        "M2",
        ("run2", "fit"),
        "run2",
        "D",
        "A2",
        ("run1", "load"),
        ("run2", "load"),
        "run1",
        "N",
    }
    # downstream and unrelated steps are left out
    assert "R1" not in g and ("run2", "score") not in g and "M1" not in g
    assert nx.is_directed_acyclic_graph(g)


def test_edges_and_attributes() -> None:
    g = build_lineage(_records(), "M2")
    assert g.edges["D", ("run2", "fit")] == {"kind": "input", "param": "X"}
    assert g.edges[("run2", "fit"), "M2"] == {"kind": "output"}
    assert g.edges[("run1", "load"), "run1"] == {"kind": "member"}
    fit = g.nodes[("run2", "fit")]
    assert fit["kind"] == "step"
    assert (fit["name"], fit["step"], fit["status"], fit["key"]) == (
        "fit",
        "pkg.mod:fit",
        "executed",
        "key-fit-M2",
    )
    assert g.nodes["run2"]["kind"] == "run" and g.nodes["run2"]["status"] == "failed"
    data = g.nodes["D"]
    assert data["kind"] == "artifact"
    assert data["names"] == ["load"]
    assert data["keys"] == ["key-load-D"]
    assert data["params"] == ["X"]
    assert g.nodes[("run2", "load")]["status"] == "cached"
    assert g.nodes["N"]["names"] == []  # a parameter value: no producer


def test_unknown_digest_is_a_lone_artifact() -> None:
    g = build_lineage(_records(), "nope")
    assert list(g.nodes(data="kind")) == [("nope", "artifact")]


def test_diamond_is_walked_once() -> None:
    run = RunRecord(
        id="r",
        pipeline="p",
        steps=[
            _step("a", "A"),
            _step("b", "B", x="A"),
            _step("c", "C", x="A"),
            _step("d", "D", left="B", right="C"),
        ],
    )
    g = build_lineage([run], "D")
    assert sum(1 for _, k in g.nodes(data="kind") if k == "step") == 4
    assert g.in_degree(("r", "a")) == 0
    assert g.out_degree("A") == 2


def test_lineage_follows_a_run_time_fan_out_to_its_source(tmp_path: Path) -> None:
    import mlflowkit as mk
    from tests.resources import dag_basic

    store = mk.Store(str(tmp_path / "fan"))
    run = dag_basic.fan.plan(n=4).run(store=store, progress=False)
    graph = store.lineage(run.step("total").output_digest or "")
    steps = {data["name"] for _, data in graph.nodes(data=True) if data.get("kind") == "step"}
    assert {"total", "square", "split"} <= steps  # through the gather, back to the source
    assert {f"square[{i}]" for i in range(4)} <= steps
