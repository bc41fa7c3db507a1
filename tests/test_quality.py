"""The project's own quality gates, run as tests so the one test command covers them."""

from __future__ import annotations

import shutil
import subprocess
import sys
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


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


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
