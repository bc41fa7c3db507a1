"""Lineage graphs built from run records alone."""

from __future__ import annotations

import re
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


def test_parameter_values_internal_nodes_and_inputs_are_in_the_graph() -> None:
    from mlflowkit.hashing import hash_value

    seed, rate = hash_value(3), hash_value(0.5)
    run = RunRecord(
        id="r",
        pipeline="p",
        params={"seed": 3, "other": 3, "rate": 0.5},
        steps=[
            _step("make", "T", seed=seed),
            StepRun(
                "make.0",
                output_digest="X",
                step="mlflowkit.plan:_op_getitem@getitem",
                inputs={"obj": "T", "key": "K0"},
            ),
            _step("fit", "M", X="X", rate=rate, n="N"),
        ],
    )
    g = build_lineage([run], "M")
    assert g.nodes[seed]["value"] == 3 and g.nodes[seed]["parameters"] == ["other", "seed"]
    assert g.nodes[rate]["value"] == 0.5 and g.nodes[rate]["parameters"] == ["rate"]
    assert "value" not in g.nodes["N"] and "value" not in g.nodes["X"]  # no such parameter
    assert g.nodes["r"]["params"] == {"seed": 3, "other": 3, "rate": 0.5}
    assert g.nodes[("r", "make.0")]["internal"] and not g.nodes[("r", "fit")]["internal"]
    assert g.nodes[("r", "fit")]["inputs"] == [("X", "X"), ("rate", rate), ("n", "N")]


def _lineage_text(args: list[str]) -> str:
    from click.testing import CliRunner

    from mlflowkit.cli import main

    result = CliRunner().invoke(main, ["lineage", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _check_see_above(text: str) -> None:
    """Every "(see above)" names step calls already expanded on an earlier line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "(see above)" not in line:
            continue
        for name in re.findall(r"from ([\w\-\[\]\.]+)", line):
            earlier = [li for li in lines[:i] if "(see above)" not in li]
            assert any(f"from {name}" in li or f"── {name}" in li for li in earlier), (name, text)


def test_cli_lineage_is_a_compact_tree_with_values_and_no_internal_nodes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    import mlflowkit as mk
    from mlflowkit.cli import main

    url = str(tmp_path / "s")
    target = str(Path(__file__).parent / "resources" / "dag_basic.py") + ":train"
    ran = CliRunner().invoke(main, ["run", target, "-p", "n=7", "-p", "alpha=0.3", "--store", url])
    assert ran.exit_code == 0, ran.output
    with mk.Store(url) as store:
        record = store.runs()[0]
    score = record.steps[-1].output_digest or ""
    text = _lineage_text([score[:12], "--store", url])
    assert text.splitlines()[0].startswith(f"{score[:16]} from score  executed in run {record.id}")
    assert "from fit  (alpha=0.3)" in text  # the parameters' values, not their digests
    assert "from make_data, item 0  (n=7" in text
    assert "make_data.0" not in text and "key" not in text  # internal nodes are seen through
    assert len(text.splitlines()) <= 7
    _check_see_above(text)
    everything = _lineage_text([score[:12], "--store", url, "--all"])
    assert "from make_data.0" in everything and "obj = " in everything
    _check_see_above(everything)


def test_cli_lineage_of_fan_outs_expands_each_call_once(tmp_path: Path) -> None:
    import mlflowkit as mk
    from tests.resources import counted

    url = str(tmp_path / "s")
    with mk.Store(url) as store:
        run = counted.counted.plan(n=5).run(store=store, progress=False)
    final = run.step("shape_of").output_digest or ""
    text = _lineage_text([final[:12], "--store", url])
    _check_see_above(text)
    assert "from add-2[0..2]" in text and "from total, attribute imag" in text
    for call in ("pair", "add[0]", "add[1]", "add[2]", "add-2[0]", "total"):
        named = re.compile(rf"from {re.escape(call)}(?=[\s,]|$)")
        expanded = [li for li in text.splitlines() if named.search(li)]
        expanded += [li for li in text.splitlines() if li.rstrip().endswith(f"── {call}")]
        assert [li for li in expanded if "(see above)" not in li], (call, text)
    assert "n=5" in text and ".imag" not in text
    assert len(text.splitlines()) <= 20
