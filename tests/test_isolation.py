"""The test suite keeps to temporary stores and caches: a run of it leaves the user's own
store (``./.mlflowkit``) and cache folder (``~/.cache/mlflowkit``) untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlflowkit as mk

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def seen_by_a_module_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What a module-scoped fixture (one that might start worker processes) works with.

    It also hashes a file, as a worker would: that writes the file-stat cache.
    """
    data = tmp_path_factory.mktemp("isolation") / "data.csv"
    data.write_text("1,2,3\n")
    os.utime(data, (1_000_000_000, 1_000_000_000))  # old enough to be cached
    mk.File(str(data)).digest()
    return {k: os.environ.get(k, "") for k in ("MLFLOWKIT_STORE", "MLFLOWKIT_CACHE_DIR")}


def test_fixtures_of_every_scope_get_a_temporary_store_and_cache(
    seen_by_a_module_fixture: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = str(tmp_path_factory.getbasetemp())
    for name, value in seen_by_a_module_fixture.items():
        assert value.startswith(base + os.sep), (name, value)
    for name in ("MLFLOWKIT_STORE", "MLFLOWKIT_CACHE_DIR"):
        assert os.environ[name].startswith(base + os.sep), name


def test_a_run_of_tests_leaves_the_users_store_and_cache_alone(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOWKIT_STORE", "MLFLOWKIT_CACHE_DIR", "XDG_CACHE_HOME")
    }
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    tests = [
        # runs pipelines without a store (`p()`): they use the default store
        "tests/test_plan.py::test_pipeline_returns_structures_and_none",
        # a module-scoped fixture hashes a file
        "tests/test_isolation.py::test_fixtures_of_every_scope_get_a_temporary_store_and_cache",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *(str(ROOT / t.split("::")[0]) + "::" + t.split("::")[1] for t in tests),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "--basetemp",
            str(tmp_path / "inner"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert not (work / ".mlflowkit").exists(), "the tests wrote into ./.mlflowkit"
    assert not (home / ".cache" / "mlflowkit").exists(), "the tests wrote into ~/.cache"
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "2 passed" in out.stdout
    assert sorted(p.name for p in work.iterdir()) == []
