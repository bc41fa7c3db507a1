"""The benchmark harness keeps working: a quick run for mlflowkit, and its report pieces.

No timing is asserted: only that every workload produced positive numbers for mlflowkit and
that the outputs are well formed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.targets import BEST_PEER, TARGETS

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"A", "B", "C", "D", "E", "F", "G"}
FIELDS = {"workload", "tool", "variant", "n", "unit", "median", "min", "max", "reps", "notes"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_run_measures_every_workload_for_mlflowkit(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nHand-written intro.\n", encoding="utf-8")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--tools", "mlflowkit"]
    cmd += ["--json", str(out), "--markdown", str(page)]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=230, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    header, *results = (json.loads(line) for line in out.read_text("utf-8").splitlines())
    assert header["type"] == "machine"
    for key in ("cpu", "cores", "ram_gib", "os", "python", "packages", "command"):
        assert header[key], key
    assert "mlflowkit" in header["packages"]

    assert results and all(r["type"] == "result" and set(r) >= FIELDS for r in results)
    assert {r["kind"] for r in results} <= {"mlflowkit", "reference"}
    mine = [r for r in results if r["kind"] == "mlflowkit"]
    assert {r["workload"] for r in mine if r["status"] == "ok"} == WORKLOADS
    for r in mine:
        assert r["status"] in ("ok", "n/a"), r  # never an error or a time-out
        if r["status"] == "ok":
            assert r["reps"] >= 1 and len(r["values"]) == r["reps"], r
            assert 0 < r["min"] <= r["median"] <= r["max"], r
        else:
            assert r["notes"], r  # a tool that cannot take part says why
    # targets are ratios to a peer of the same run: with no peer run, none is met or missed
    targeted = [r for r in mine if "target" in r]
    assert {r["row_id"] for r in targeted} == set(TARGETS)
    for r in targeted:
        assert r["target_met"] is None and r["target_ratio"] is None, r
        assert r["target_verdict"].startswith("not assessed ("), r
        if r["target"]["peer"] != BEST_PEER:
            assert r["target_verdict"] == f"not assessed (peer {r['target']['peer']} not measured)"

    text = page.read_text("utf-8")
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n")
    assert "| mlflowkit |" in text and header["cpu"] in text
    assert "mlflowkit" in proc.stdout


def test_markdown_update_keeps_the_hand_written_part(tmp_path: Path) -> None:
    from benchmarks.report import BEGIN_MARK, END_MARK, update_markdown

    page = tmp_path / "page.md"
    page.write_text("# Title\n\nIntro.\n", encoding="utf-8")
    update_markdown(str(page), f"{BEGIN_MARK}\nfirst\n{END_MARK}\n")
    page.write_text(page.read_text("utf-8") + "\n## Kept after\n", encoding="utf-8")
    update_markdown(str(page), f"{BEGIN_MARK}\nsecond\n{END_MARK}\n")
    text = page.read_text("utf-8")
    assert text.startswith("# Title\n\nIntro.\n")
    assert "second" in text and "first" not in text and text.count(BEGIN_MARK) == 1
    assert text.rstrip().endswith("## Kept after")


def test_tool_and_workload_filters() -> None:
    from benchmarks.cli import build_groups, select_workloads
    from benchmarks.core import Config

    assert select_workloads("a,hash") == ["A", "E"]
    assert select_workloads(None) == sorted(WORKLOADS)
    with pytest.raises(SystemExit):
        select_workloads("nope")
    groups = build_groups(Config.quick_run(), ["E"], ["joblib"])
    (_, cases), *_ = groups
    assert {c.kind for c in cases} == {"peer", "reference"}
    assert all(c.family == "joblib" for c in cases if c.kind == "peer")


def test_scale_curves_option_names_curves_with_a_comma_in_them() -> None:
    from benchmarks.scale import CURVES, parse_curves

    assert parse_curves("chain,map, threads,cached re-run") == [
        "chain",
        "map, threads",
        "cached re-run",
    ]
    assert parse_curves(",".join(CURVES)) == list(CURVES)


@pytest.mark.timeout(240)
def test_scale_curves_measure_time_and_memory_per_step(tmp_path: Path) -> None:
    out, page, image = tmp_path / "scale.jsonl", tmp_path / "page.md", tmp_path / "scale.png"
    page.write_text("# Benchmarks\n\nIntro.\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "benchmarks.scale", "--sizes", "20,60"]
    cmd += ["--curves", "chain,cached re-run", "--json", str(out)]
    cmd += ["--markdown", str(page), "--chart", str(image)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=230, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    points = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert {(p["curve"], p["n"]) for p in points} == {
        ("chain", 20),
        ("chain", 60),
        ("cached re-run", 20),
        ("cached re-run", 60),
    }
    for p in points:
        assert p["status"] == "ok", p
        assert p["us_per_step"] > 0 and p["driver_bytes_per_step"] >= 0, p
    assert image.read_bytes().startswith(b"\x89PNG")
    text = page.read_text("utf-8")
    assert text.startswith("# Benchmarks\n\nIntro.\n")
    assert "| chain |" in text and "scale.png" in text
    # regenerating replaces the section instead of adding a second one
    again = [sys.executable, "-m", "benchmarks.scale", "--from-json", str(out)]
    again += ["--markdown", str(page)]
    assert (
        subprocess.run(again, cwd=ROOT, capture_output=True, timeout=60, check=False).returncode
        == 0
    )
    assert page.read_text("utf-8").count("BEGIN SCALE CURVES") == 1


@pytest.mark.timeout(300)
def test_team_store_benchmark_compares_the_three_seams(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    pytest.importorskip("s3fs")
    page = tmp_path / "page.md"
    page.write_text("# Benchmarks\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "benchmarks.team", "--quick", "--markdown", str(page)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    text = page.read_text("utf-8")
    for combo in ("local + SQLite", "S3 + SQLite", "S3 + PostgreSQL"):
        assert f"| {combo} |" in text, combo
    assert text.count("BEGIN TEAM STORES") == 1
