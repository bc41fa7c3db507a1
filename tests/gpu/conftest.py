"""Fixtures of the GPU tests: running a check module with pytest in a fresh process.

Numba decides once per process, when it is first imported, whether ``numba.cuda`` is the CUDA
simulator; the checks that import it therefore run in their own process, so that the rest of
the suite is never affected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_checks(module: str, *, simulator: bool, timeout: float = 300.0) -> None:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(Path(__file__).parent / module),
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        output = f"{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
        pytest.fail(f"{module} failed (exit {proc.returncode}):\n{output}", pytrace=False)
    # Echo the inner summary line so that it shows with -rA / -s.
    print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "(no output)")


@pytest.fixture
def run_checks() -> Callable[..., None]:
    """``run_checks(module, simulator=bool)``: run ``tests/gpu/<module>`` in a fresh process."""
    return _run_checks
