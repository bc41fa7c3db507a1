"""The project's own quality gates, run as tests so the one test command covers them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the test extra (pip install -e '.[test]')")
    return [found]


def _run(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_ruff_lint_is_clean() -> None:
    out = _run([*_tool("ruff"), "check", "mlflowkit", "tests", "examples", "benchmarks"])
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean() -> None:
    out = _run(
        [*_tool("ruff"), "format", "--check", "mlflowkit", "tests", "examples", "benchmarks"]
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    out = _run([*_tool("mypy"), "--strict", "mlflowkit"])
    assert out.returncode == 0, out.stdout + out.stderr


def test_imports_flow_down_the_layers() -> None:
    """The import-linter contracts in pyproject.toml: the layers of docs/concepts/design.md,
    no import of the top package from below, no hashing -> gpu, private modules kept in
    their package, and a command line that uses the public API only."""
    # this checkout's package, whatever else is installed
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    out = _run([*_tool("lint-imports")], env={**os.environ, "PYTHONPATH": path})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


def test_no_private_name_is_imported_from_another_module() -> None:
    """``from mlflowkit.x import _name`` anywhere in the package (see .flake8)."""
    out = _run([*_tool("flake8"), "mlflowkit"])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_the_layer_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The contracts are not vacuous: a copy of the package in which the plan imports the
    driver (the old plan -> driver -> plan cycle) breaks the layers contract."""
    copy = tmp_path / "mlflowkit"
    shutil.copytree(ROOT / "mlflowkit", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "plan.py").open("a", encoding="utf-8") as f:
        f.write("\nfrom mlflowkit.driver import run_plan  # noqa: E402, F401\n")
    # lint-imports finds the package from its working directory first
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [*_tool("lint-imports"), "--no-cache", str(ROOT / "pyproject.toml")]
    out = _run(cmd, env=env, cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    assert "mlflowkit.plan -> mlflowkit.driver" in out.stdout, out.stdout


def test_the_private_name_check_sees_imports_inside_the_package() -> None:
    """Ruff's PLC2701 skips imports from the file's own package; the flake8 check does not."""
    # not under pytest's tmp_path: the plugin skips paths that look like tests ("/test...")
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe.py"
        probe.write_text("from mlflowkit.plan import _op_gather\n", encoding="utf-8")
        out = _run([*_tool("flake8"), "--config", str(ROOT / ".flake8"), str(probe)])
    assert out.returncode != 0
    assert "PNI001" in out.stdout and "_op_gather" in out.stdout, out.stdout
