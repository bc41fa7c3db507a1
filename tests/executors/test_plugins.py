"""Executor plugins: discovery by entry point, type checks on load, and the shipped suite.

The test plugin package (``tests/plugin_pkg``) is installed into a temporary folder -- its
module plus a ``.dist-info`` with the entry points its ``pyproject.toml`` declares, which is
what an installer writes -- and used only by subprocesses, so the entry points of this test
process are never polluted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlflowkit as mk

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "plugin_pkg"


def _load_toml(path: Path) -> dict[str, object]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with path.open("rb") as f:
        data: dict[str, object] = tomllib.load(f)
    return data


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the test plugin is installed (module + dist-info with entry points)."""
    project = _load_toml(PLUGIN / "pyproject.toml")["project"]
    setuptools = _load_toml(PLUGIN / "pyproject.toml")["tool"]["setuptools"]  # type: ignore[index]
    assert isinstance(project, dict)
    site = tmp_path_factory.mktemp("plugin-site")
    for module in setuptools["py-modules"]:
        shutil.copy(PLUGIN / f"{module}.py", site / f"{module}.py")
    dist_name = str(project["name"]).replace("-", "_")
    info = site / f"{dist_name}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def _python(site: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


def test_the_plugin_is_discovered_and_runs(plugin_site: Path, tmp_path: Path) -> None:
    out = _python(
        plugin_site,
        """
        import json
        import mlflowkit as mk
        from mlflowkit.testing import dags
        from mlflowkit_echo_plugin import EchoExecutor

        names = mk.executors.available()
        ex = mk.executors.get("echo-plugin")
        run = dags.fan.plan(n=4).run(executor="echo-plugin", store="store", progress=False)
        print(json.dumps({
            "available": names,
            "type": type(ex).__name__,
            "is_plugin_class": isinstance(ex, EchoExecutor),
            "output": run.output,
            "executor": run.record.executor,
        }))
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert "echo-plugin" in facts["available"]
    assert {"local", "threads", "processes"} <= set(facts["available"])
    assert facts["type"] == "EchoExecutor" and facts["is_plugin_class"]
    assert facts["output"] == 12
    assert facts["executor"] == "echo-plugin"


def test_a_plugin_that_is_not_an_executor_is_refused(plugin_site: Path, tmp_path: Path) -> None:
    out = _python(
        plugin_site,
        """
        import mlflowkit as mk
        try:
            mk.executors.get("not-an-executor")
        except mk.ExecutorError as exc:
            print("REFUSED", exc)
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout
    assert "'not-an-executor'" in out.stdout and "NotAnExecutor" in out.stdout
    assert "Executor subclass" in out.stdout


def test_the_plugin_passes_the_contract_suite(plugin_site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(ROOT)])}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(PLUGIN / "check_contract.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "passed" in out.stdout and "failed" not in out.stdout


def test_the_plugin_is_not_visible_here() -> None:
    assert "echo-plugin" not in mk.executors.available()


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(mk.ExecutorError) as info:
        mk.executors.get("no-such-executor")
    message = str(info.value)
    assert "'no-such-executor'" in message
    for known in ("local", "threads", "processes", "dask"):
        assert f"'{known}'" in message
    assert "mlflowkit.executors" in message  # where plugins register


def test_run_with_an_unknown_executor_fails_before_running(store: mk.Store) -> None:
    from mlflowkit.testing import dags

    with pytest.raises(mk.ExecutorError, match="Unknown executor"):
        dags.diamond.plan().run(executor="nope", store=store, progress=False)


def test_importing_mlflowkit_and_its_executors_stays_light() -> None:
    code = (
        "import sys, json, mlflowkit, mlflowkit.testing\n"
        "import mlflowkit.executors.threads, mlflowkit.executors.processes\n"
        "import mlflowkit.executors as ex; ex.available()\n"
        "print(json.dumps([m for m in ('dask', 'distributed') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
