"""The notebooks under notebooks/ run top to bottom, so they never rot.

Each notebook is executed by a Jupyter kernel running this interpreter (a kernel spec for
``sys.executable`` is written to a temporary folder and put first on ``JUPYTER_PATH``, so a
fresh virtual environment needs no ``ipykernel install``), in a temporary working folder.
The notebooks assert their own facts in cells (cache hits, re-executions); this module checks
what they show (the DAG picture, the run table, the progress bar) and appends one cell that
checks, inside the kernel, which progress display a notebook gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "mlflowkit-tests"

# appended to every notebook before it runs (never saved): checks from inside the kernel
_KERNEL_CHECKS = """
from mlflowkit.display import NotebookProgress, in_notebook, make_progress
assert in_notebook(), "the kernel is not recognized as a notebook"
assert isinstance(make_progress(None), NotebookProgress), type(make_progress(None))
"""


def test_every_notebook_is_committed_without_outputs() -> None:
    assert NOTEBOOKS, "no notebooks found under notebooks/"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: strip them"
            assert cell.get("execution_count") is None, (
                f"{path.name} cell {i} has an execution count: strip it"
            )


def test_the_three_notebooks_exist() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "repeatability.ipynb", "scale_out.ipynb"} <= names


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Jupyter data folder holding one kernel spec: this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mlflowkit tests",
                "language": "python",
            }
        )
    )
    return str(root)


def _outputs(nb: Any) -> list[dict[str, Any]]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _html(nb: Any) -> list[str]:
    found = []
    for out in _outputs(nb):
        data = out.get("data", {})
        found.extend(str(data[m]) for m in ("text/html", "image/svg+xml") if m in data)
    return found


# Executes one notebook and writes the result; run in a child process, so that the kernel
# client's sockets and threads never live in the test process.
_RUNNER = """
import os, sys, tempfile
import nbformat, nbclient
from jupyter_client.manager import KernelManager

source, target, workdir, kernel, extra = sys.argv[1:6]
nb = nbformat.read(source, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(extra))
# IPC sockets in a short private folder (a socket path must stay under ~100 characters)
sockets = tempfile.mkdtemp(prefix="mk-kernel-")
manager = KernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(sockets, "k"))
client = nbclient.NotebookClient(
    nb, km=manager, timeout=180, startup_timeout=120, resources={"metadata": {"path": workdir}}
)
try:
    client.execute()
finally:
    nbformat.write(nb, target)
"""


def _execute(path: Path, workdir: Path, kernel_path: str) -> tuple[Any, str]:
    env = dict(os.environ)
    env["JUPYTER_PATH"] = kernel_path + os.pathsep + env.get("JUPYTER_PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MLFLOWKIT_STORE", None)
    target = workdir / f"executed-{path.name}"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUNNER,
            str(path),
            str(target),
            str(workdir),
            KERNEL,
            _KERNEL_CHECKS,
        ],
        input=None,
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=600,
        check=False,
    )
    assert target.exists(), f"{path.name} did not run:\n{out.stdout}\n{out.stderr}"
    nb = nbformat.read(target, as_version=4)
    return nb, out.stderr if out.returncode else ""


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_dag_table_and_progress(
    path: Path, tmp_path: Path, kernel_path: str
) -> None:
    started = time.perf_counter()
    nb, failure = _execute(path, tmp_path, kernel_path)
    elapsed = time.perf_counter() - started
    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors, "\n".join("\n".join(o.get("traceback", [])) for o in errors)
    assert not failure, failure
    html = _html(nb)
    assert any("mlflowkit-dag" in h or "<svg" in h for h in html), "no DAG picture was shown"
    assert any("mlflowkit-run" in h for h in html), "no run table was shown"
    assert any("mlflowkit-progress" in h for h in html), "no progress bar was shown"
    if path.name == "quickstart.ipynb":  # the comparison of runs, as a table and a chart
        assert any("evaluate[0].accuracy" in h and "<table" in h for h in html), "no comparison"
        assert any("image/png" in o.get("data", {}) for o in _outputs(nb)), "no metric chart"
    assert elapsed < 120, f"{path.name} took {elapsed:.0f} s; keep notebooks small"


_STEPS_CELL = """
import mlflowkit as mk

def offset(x: int) -> int:
    return x + 1

@mk.step
def first(n: int) -> int:
    return offset(n)

@mk.step
def second(x: int) -> int:
    return x * 2

@mk.pipeline
def chain(n: int = 3) -> int:
    return second(first(n))
"""


@pytest.mark.slow
def test_cells_run_again_hit_the_cache_and_edits_reexecute(
    tmp_path: Path, kernel_path: str
) -> None:
    """Re-running an unchanged cell is a cache hit; editing a cell re-executes what depends on
    it, in a live kernel (cells are executed in this order, like a user would)."""
    cells = [
        _STEPS_CELL,
        "store = mk.Store('memory://cells')\n"
        "run = chain.plan().run(store=store)\n"
        "assert [s.status for s in run.steps] == ['executed', 'executed']",
        _STEPS_CELL,  # the same cell, run again
        "run = chain.plan().run(store=store)\n"
        "assert [s.status for s in run.steps] == ['cached', 'cached'], run.steps",
        _STEPS_CELL.replace("return x * 2", "return x * 3"),  # edit the downstream step
        "run = chain.plan().run(store=store)\n"
        "assert [s.status for s in run.steps] == ['cached', 'executed'], run.steps\n"
        "assert run.output == 12",
        "def offset(x: int) -> int:\n    return x + 2",  # edit a helper in another cell
        "run = chain.plan().run(store=store)\n"
        "assert [s.status for s in run.steps] == ['executed', 'executed'], run.steps\n"
        "assert run.output == 15",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "cells.ipynb"
    nbformat.write(nb, path)
    executed, failure = _execute(path, tmp_path, kernel_path)
    errors = [o for o in _outputs(executed) if o.get("output_type") == "error"]
    assert not errors, "\n".join("\n".join(o.get("traceback", [])) for o in errors)
    assert not failure, failure
