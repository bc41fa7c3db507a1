"""The lifecycle example runs end to end and shows what re-ran after new data, and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlflowkit as mk

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "examples" / "lifecycle" / "main.py"


@pytest.mark.timeout(300)
def test_lifecycle_example(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, str(MAIN), str(store)],
        cwd=tmp_path,  # outside any git tree: the mvp gate does not depend on the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "published digits-features@1" in out and "published digits-model@1" in out
    assert "digits-model@1: poc -> prototype (accurate_enough passed)" in out
    assert "prototype -> mvp (reproducible passed, reproduces passed)" in out
    assert "named artifact 'digits-features' moved from version 1 to version 2" in out
    assert "artifact:digits-features cached, fit executed" in out
    assert "digits-model@mvp: digits-model@1" in out
    assert "digits-model@prototype: digits-model@2" in out
    with mk.Store(str(store)) as s:
        assert s.artifacts() == ["digits-features", "digits-model"]
        assert [v.version for v in s.versions("digits-model")] == [1, 2]
        assert s.artifact("digits-model@mvp").version == 1
        assert [p.to_stage for p in s.history("digits-model")] == [
            "poc",
            "prototype",
            "mvp",
            "poc",
            "prototype",
        ]
