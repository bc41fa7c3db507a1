"""Repeatability across fresh interpreters: what re-executes after an edit, and what does not.

A user's project (two modules, a data file, a data folder) is written to a temporary folder and
run in a fresh Python process each time (random ``PYTHONHASHSEED``, no bytecode cache), the way
a user edits a file and runs the pipeline again. Each step counts its executions in a file.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlflowkit as mk

HELPERS = '''\
"""Helpers of the user's project, in a module of their own."""

OFFSET = 7


def normalise(xs: list[int]) -> list[int]:
    return [x - OFFSET for x in xs]
'''

PIPELINE = '''\
"""A user's pipeline."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import mlflowkit as mk
from userhelpers import normalise

SCALE = 3


def bump(name: str) -> None:
    with open(os.path.join(os.environ["USERPIPE_COUNTERS"], name), "a") as f:
        f.write("x")


def _inner(x: int) -> int:
    return x + 1


def _outer(x: int) -> int:
    return _inner(x) * 2


@mk.step
def shaped(n: int) -> list[int]:
    bump("shaped")
    return [_outer(i) for i in range(n)]


@mk.step
def scaled(n: int) -> list[int]:
    bump("scaled")
    return [i * SCALE for i in range(n)]


@mk.step
def shifted(n: int) -> list[int]:
    bump("shifted")
    return normalise(list(range(n)))


@mk.step(version="1")
def pinned(n: int) -> int:
    bump("pinned")
    return n * 10


@mk.step
def hinted(n: int) -> int:
    bump("hinted")
    return n - 1


@mk.step
def evens(n: int) -> list[int]:
    bump("evens")
    return [2 * i for i in range(n)]


@mk.step
def after(xs: list[int]) -> int:
    bump("after")
    return sum(xs)


@mk.step
def noise(n: int) -> list[float]:
    bump("noise")
    return [float(v) for v in mk.rng().normal(size=n)]


@mk.step
def spaced(n: int) -> list[float]:
    bump("spaced")
    return [float(v) for v in np.linspace(0.0, 1.0, n)]


@mk.step
def read_file(f: mk.File) -> str:
    bump("read_file")
    with open(f.path) as fh:
        return fh.read()


@mk.step
def read_dir(d: mk.Dir) -> list[str]:
    bump("read_dir")
    out = []
    for name in sorted(os.listdir(d.path)):
        with open(os.path.join(d.path, name)) as fh:
            out.append(name + "=" + fh.read())
    return out


@mk.pipeline
def project(n: int, data: str, folder: str) -> Any:
    return {
        "shaped": shaped(n),
        "scaled": scaled(n),
        "shifted": shifted(n),
        "pinned": pinned(n),
        "hinted": hinted(n),
        "after": after(evens(n)),
        "noise": noise(n),
        "spaced": spaced(n),
        "file": read_file(mk.File(data)),
        "dir": read_dir(mk.Dir(folder)),
    }
'''

DRIVER = """
import json, sys
import userpipe
store, n, data, folder = sys.argv[1:5]
run = userpipe.project.plan(n=int(n), data=data, folder=folder).run(store=store, progress=False)
print(json.dumps({
    "id": run.id,
    "status": run.status,
    "steps": {s.name: [s.status, s.key, s.output_digest] for s in run.steps},
    "output": run.output,
    "environment": run.record.environment,
}))
"""

ALL_STEPS = {
    "shaped",
    "scaled",
    "shifted",
    "pinned",
    "hinted",
    "evens",
    "after",
    "noise",
    "spaced",
    "read_file",
    "read_dir",
}


class Project:
    """The user's project folder, its store, and a way to run it in a fresh interpreter."""

    def __init__(self, root: Path, store: Path) -> None:
        self.root = root
        self.store = store
        self.data = root / "data.txt"
        self.folder = root / "folder"
        self.rounds = 0
        self.seeds = random.Random(7)
        root.mkdir(parents=True)
        (root / "userhelpers.py").write_text(HELPERS)
        (root / "userpipe.py").write_text(PIPELINE)
        self.data.write_text("alpha\n")
        self.folder.mkdir()
        (self.folder / "a.txt").write_text("one")
        (self.folder / "b.txt").write_text("two")

    def edit(self, module: str, old: str, new: str) -> None:
        path = self.root / f"{module}.py"
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} not found once in {module}.py"
        path.write_text(text.replace(old, new))

    def run(self, n: int = 5, *, data: Path | None = None, **env: str) -> dict[str, Any]:
        """Run the pipeline in a fresh interpreter; what ran, with ``executed`` counted."""
        self.rounds += 1
        counters = self.root.parent / f"counters-{self.root.name}-{self.rounds}"
        counters.mkdir()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                DRIVER,
                str(self.store),
                str(n),
                str(data or self.data),
                str(self.folder),
            ],
            cwd=self.root,
            env={
                **os.environ,
                "PYTHONHASHSEED": str(self.seeds.randrange(1, 2**32)),
                "PYTHONDONTWRITEBYTECODE": "1",  # an edit within the same second must count
                "USERPIPE_COUNTERS": str(counters),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        assert result["status"] == "succeeded"
        counted = {p.name: len(p.read_bytes()) for p in counters.iterdir()}
        assert set(counted.values()) <= {1}, counted  # nothing executed twice in one run
        result["executed"] = set(counted)
        statuses = {name: s[0] for name, s in result["steps"].items()}
        assert set(statuses) == ALL_STEPS
        assert {n for n, st in statuses.items() if st == "executed"} == result["executed"]
        assert {n for n, st in statuses.items() if st != "executed"} == (
            ALL_STEPS - result["executed"]
        )
        assert set(statuses.values()) <= {"executed", "cached"}
        return result


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj", tmp_path / "store")


def test_code_edits_that_matter_re_execute_and_cosmetic_ones_do_not(project: Project) -> None:
    first = project.run()
    assert first["executed"] == ALL_STEPS
    assert first["output"]["shaped"] == [2, 4, 6, 8, 10]

    # a fresh interpreter with another hash seed: everything is cached
    assert project.run()["executed"] == set()

    # comments, docstrings and formatting, in both modules
    project.edit("userpipe", "def _inner(x: int) -> int:\n", "def _inner(x: int) -> int:  # +1\n")
    project.edit(
        "userpipe",
        "def shaped(n: int) -> list[int]:\n",
        'def shaped(n: int) -> list[int]:\n    """Shapes the numbers."""\n',
    )
    project.edit(
        "userpipe",
        "    return [_outer(i) for i in range(n)]\n",
        "    return [\n        _outer(i)  # doubled\n        for i in range(n)\n    ]\n",
    )
    project.edit("userpipe", '"""A user\'s pipeline."""', '"""A user\'s pipeline, documented."""')
    project.edit("userpipe", "    return n * 10\n", "\n    return (n * 10)\n")
    project.edit("userhelpers", "    return [x - OFFSET", "    # shift down\n    return [x-OFFSET")
    assert project.run()["executed"] == set()

    # a helper two calls below a step
    project.edit("userpipe", "    return x + 1\n", "    return x + 2\n")
    edited = project.run()
    assert edited["executed"] == {"shaped"}
    assert edited["output"]["shaped"] == [4, 6, 8, 10, 12]

    # a module constant
    project.edit("userpipe", "SCALE = 3\n", "SCALE = 4\n")
    edited = project.run()
    assert edited["executed"] == {"scaled"}
    assert edited["output"]["scaled"] == [0, 4, 8, 12, 16]

    # a helper in another of the user's modules
    project.edit("userhelpers", "x-OFFSET for x", "x - OFFSET - 1 for x")
    edited = project.run()
    assert edited["executed"] == {"shifted"}
    assert edited["output"]["shifted"] == [-8, -7, -6, -5, -4]

    # version= pins the step: its code is not looked at ...
    project.edit("userpipe", "    return (n * 10)\n", "    return n * 11\n")
    edited = project.run()
    assert edited["executed"] == set()
    assert edited["output"]["pinned"] == 50  # the user vouched nothing changed
    # ... until the version changes
    project.edit("userpipe", '@mk.step(version="1")', '@mk.step(version="2")')
    edited = project.run()
    assert edited["executed"] == {"pinned"}
    assert edited["output"]["pinned"] == 55

    # execution hints are not part of a key
    project.edit(
        "userpipe",
        "@mk.step\ndef hinted(",
        "@mk.step(retries=3, retry_delay=0.5, timeout=30.0)\ndef hinted(",
    )
    assert project.run()["executed"] == set()

    # early cutoff across processes: new code, same output, downstream stays cached
    project.edit(
        "userpipe",
        "    return [2 * i for i in range(n)]\n",
        "    return [i + i for i in range(n)]\n",
    )
    edited = project.run()
    assert edited["executed"] == {"evens"}
    assert edited["steps"]["evens"][2] == first["steps"]["evens"][2]
    assert edited["steps"]["after"][1] == first["steps"]["after"][1]  # same key

    # finally: an unchanged project, in yet another interpreter, is fully cached
    assert project.run()["executed"] == set()


def test_file_and_dir_inputs_rerun_on_content_not_on_mtime_or_path(project: Project) -> None:
    first = project.run()
    assert first["executed"] == ALL_STEPS
    assert first["output"]["file"] == "alpha\n"
    assert first["output"]["dir"] == ["a.txt=one", "b.txt=two"]

    # touching (mtime only) re-runs nothing
    for path in (project.data, project.folder / "a.txt"):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    assert project.run()["executed"] == set()

    # moving the file: same content, new path, nothing re-runs
    moved = project.root / "moved.txt"
    shutil.copyfile(project.data, moved)
    assert project.run(data=moved)["executed"] == set()

    # editing the file re-runs only the step that reads it
    project.data.write_text("beta\n")
    edited = project.run()
    assert edited["executed"] == {"read_file"}
    assert edited["output"]["file"] == "beta\n"

    # editing a file in the folder, then adding one, re-runs only the step that reads it
    (project.folder / "b.txt").write_text("TWO")
    edited = project.run()
    assert edited["executed"] == {"read_dir"}
    assert edited["output"]["dir"] == ["a.txt=one", "b.txt=TWO"]
    (project.folder / "c.txt").write_text("three")
    edited = project.run()
    assert edited["executed"] == {"read_dir"}
    assert edited["output"]["dir"][-1] == "c.txt=three"

    # going back to the first content finds the first results again
    project.data.write_text("alpha\n")
    assert project.run()["executed"] == set()


def test_keys_outputs_and_rng_are_equal_in_fresh_stores_and_processes(tmp_path: Path) -> None:
    one = Project(tmp_path / "one", tmp_path / "store-one")
    two = Project(tmp_path / "two", tmp_path / "store-two")
    first, second = one.run(), two.run()
    assert first["executed"] == second["executed"] == ALL_STEPS
    assert first["steps"] == second["steps"]  # same keys and output digests
    assert first["output"] == second["output"]
    noise = np.asarray(first["output"]["noise"])
    assert noise.shape == (5,) and len(set(noise.tolist())) == 5  # a real random stream
    # another n: another key, another stream
    other = one.run(n=6)
    assert other["steps"]["noise"][1] != first["steps"]["noise"][1]
    assert other["output"]["noise"][:5] != first["output"]["noise"]


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_environment_record_has_versions_packages_and_git_commit(tmp_path: Path) -> None:
    project = Project(tmp_path / "repo", tmp_path / "store")
    _git(project.root, "init", "-q")
    _git(project.root, "add", ".")
    _git(project.root, "commit", "-q", "-m", "pipeline")
    head = _git(project.root, "rev-parse", "HEAD")
    result = project.run()
    env = result["environment"]
    assert env["git_commit"] == head and len(head) == 40
    assert env["python"] == platform.python_version()
    assert env["platform"] == "-".join([platform.system(), platform.release(), platform.machine()])
    assert env["packages"]["numpy"] == np.__version__  # `spaced` uses numpy
    assert env["packages"]["mlflowkit"] == mk.__version__
    # the record in the store says the same
    with mk.Store(str(project.store)) as store:
        assert store.run(result["id"]).environment == env

    # outside a git repository there is no commit to record
    plain = Project(tmp_path / "plain", tmp_path / "store-plain")
    env = plain.run(GIT_CEILING_DIRECTORIES=str(tmp_path))["environment"]
    assert env["git_commit"] is None
    assert env["packages"]["numpy"] == np.__version__
