"""``benchmarks/gpu.py`` runs on a CPU-only machine: a clear message, or a simulator smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _run(*args: str, simulator: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_simulated_smoke_run(tmp_path: Path) -> None:
    pytest.importorskip("numba", reason="the CUDA simulator is part of Numba")
    out = tmp_path / "gpu.jsonl"
    proc = _run("--simulate", "--json", str(out), simulator=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    checks = [r for r in rows if r["section"] == "correctness"]
    assert len(checks) >= 5
    assert all(r["ok"] for r in checks)
    assert "== correctness ==" in proc.stdout
    ceiling = [r for r in rows if r["section"] == "ceiling"]
    assert len(ceiling) == 1
    assert ceiling[0]["same_as_cpu"] is True  # the ceiling kernel computes real compressions


def test_without_a_device_says_so_and_exits_0(tmp_path: Path) -> None:
    pytest.importorskip("numba", reason="the device code is written with Numba")
    probe = subprocess.run(
        [sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"},
    )
    if probe.stdout.strip() == "True":
        pytest.skip("a CUDA device is present: the script would run the full benchmark")
    out = tmp_path / "gpu.jsonl"
    proc = _run("--json", str(out), simulator=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No CUDA device found" in proc.stdout
    assert json.loads(out.read_text().splitlines()[0])["note"] == "no CUDA device"


@pytest.mark.slow  # the script runs the GPU tests itself, slow ones deselected: never this one
def test_the_one_script_of_gpu_checks_runs_every_part(tmp_path: Path) -> None:
    pytest.importorskip("numba", reason="the device code is written with Numba")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHON"] = sys.executable
    results = tmp_path / "results"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_checks.sh"), str(results), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "numba.cuda.is_available()" in (results / "env.txt").read_text()
    log = (results / "pytest.log").read_text()
    assert " passed" in log and " failed" not in log
    assert (results / "pytest.xml").exists()
    assert (results / "gpu.jsonl").read_text().strip()
    assert proc.stdout.rstrip().endswith("gpu_checks: exit 0")
