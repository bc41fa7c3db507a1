"""The documentation builds, and covers the whole public contract.

* ``mkdocs build --strict`` passes (broken links, missing pages and docstrings that do not
  parse are errors), into a temporary folder.
* Every public name of the contract (mirrored below from the project's API description) is
  mentioned in the hand-written pages; every name of ``mk.__all__`` has an API reference entry;
  every CLI command and option is in the command-line reference; every page is in the nav.
* The README's two commands appear verbatim in Getting started, and the plugin example of the
  plugin guide is real code that works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import click
import pytest

import mlflowkit as mk
from mlflowkit.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The public contract, name by name: each must appear in the hand-written pages.
PUBLIC_NAMES = [
    # steps
    "mk.step",
    "mk.Step",
    "version=",
    "cache=False",
    "retries",
    "retry_delay",
    "timeout",
    "resources",
    "serializer",
    ".fn",
    "Step.map",
    # pipelines and plans
    "mk.pipeline",
    "mk.Ref",
    "mk.Plan",
    "Plan.run",
    "Plan.explain",
    "plan.graph",
    "plan.steps",
    "to_mermaid",
    "to_dot",
    # runs
    "mk.Run",
    "run.id",
    "run.status",
    "run.output",
    "run.steps",
    "run.step(name)",
    "mk.StepRun",
    "output_digest",
    "duration_s",
    "attempts",
    "mk.current",
    "mk.rng",
    "force=",
    "max_workers",
    # caching
    "mk.hash_value",
    "mk.register_hasher",
    "__mlflowkit_hash__",
    "code_digest",
    "early cutoff",
    "mk.File",
    "mk.Dir",
    # store
    "mk.Store",
    "MLFLOWKIT_STORE",
    "store.get",
    "store.has",
    "store.runs",
    "store.run",
    "store.lineage",
    "store.verify",
    "store.gc",
    # named artifacts, stages, gates
    "mk.publish",
    "mk.artifact",
    "mk.ArtifactVersion",
    "store.publish",
    "store.artifacts",
    "store.versions",
    "store.artifact",
    "run.published",
    "run.consumed",
    "mk.STAGES",
    "store.promote",
    "store.stage",
    "store.history",
    "mk.gate",
    "mk.Promotion",
    "mk.GateResult",
    "mk.reproduce",
    "mk.Reproduction",
    "mk.gates.reproduces",
    # tracking
    "mk.log_metric",
    "mk.log_metrics",
    "run.metrics",
    "step_run.metrics",
    "metric_history",
    "store.metrics",
    "mlflowkit.integrations.mlflow",
    "experiment=",
    "mlflowkit.run_id",
    "OPENLINEAGE_URL",
    "openlineage.yml",
    "TrackingError",
    "[mlflow]",
    "[openlineage]",
    # executors and plugins
    "mk.executors.available",
    "mk.executors.get",
    "mk.Executor",
    "mlflowkit.executors",
    "entry-point group",
    # gpu
    "mlflowkit.gpu.blake3",
    'resources={"gpu": 1}',
    # errors
    "MlflowkitError",
    "PlanningError",
    "WiringError",
    "TypeCheckError",
    "HashingError",
    "SerializationError",
    "StoreError",
    "CorruptObjectError",
    "MissingObjectError",
    "ExecutorError",
    "RunFailed",
    "RegistryError",
    "GateFailed",
    # command line
    "mlflowkit run",
    "mlflowkit plan",
    "mlflowkit runs list",
    "mlflowkit runs show",
    "mlflowkit lineage",
    "mlflowkit store verify",
    "mlflowkit store gc",
    "mlflowkit store du",
    "mlflowkit executors",
    "mlflowkit artifacts",
    "mlflowkit promote",
    "mlflowkit reproduce",
    "mlflowkit runs compare",
    "mlflowkit export mlflow",
]


def _pages() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md"))}


def _handwritten() -> str:
    return "\n".join(t for p, t in _pages().items() if "reference" not in p.parts)


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="install the test extra: pip install -e '.[test]'")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    reference = (site / "reference" / "pipelines" / "index.html").read_text(encoding="utf-8")
    assert "Declare a function as a pipeline step" in reference  # docstrings were rendered
    assert (site / "benchmarks" / "index.html").exists()
    assert (site / "executors" / "index.html").exists()


def test_every_public_name_is_in_the_docs() -> None:
    text = _handwritten()
    missing = [name for name in PUBLIC_NAMES if name not in text]
    assert not missing, f"public names missing from docs/: {missing}"


def _reference_targets() -> list[str]:
    text = "\n".join(t for p, t in _pages().items() if "reference" in p.parts)
    return re.findall(r"^::: ([\w.]+)", text, flags=re.MULTILINE)


def test_every_exported_name_has_an_api_reference_entry() -> None:
    targets = _reference_targets()
    missing = []
    for name in mk.__all__:
        if name == "__version__":
            continue
        obj = getattr(mk, name)
        module = getattr(obj, "__module__", None) or ""
        covered = any(
            t == f"mlflowkit.{name}"
            or t.endswith(f".{name}")
            or t.startswith(f"mlflowkit.{name}.")  # a module documented member by member
            or t == module  # documented with its whole module (the errors)
            for t in targets
        )
        if not covered:
            missing.append(name)
    assert not missing, f"no '::: ...' entry under docs/reference/ for {missing}"


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


def test_every_cli_command_and_option_is_documented() -> None:
    page = (DOCS / "guides" / "cli.md").read_text(encoding="utf-8")
    missing = []
    for path, command in _commands(cli_main, "mlflowkit"):
        if f"`{path}" not in page:
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option):
                names = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
                missing.extend(f"{path} {o}" for o in names if o not in page)
    assert "--version" in page
    assert not missing, f"not in docs/guides/cli.md: {missing}"


def test_every_cli_command_has_complete_help() -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    for path, command in _commands(cli_main, "mlflowkit"):
        args = path.split()[1:]
        result = runner.invoke(cli_main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert command.help, f"{path} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{path} option {param.opts} has no help text"


def test_every_page_is_in_the_nav() -> None:
    import yaml

    config: Any = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed: set[str] = set()

    def walk(item: Any) -> None:
        if isinstance(item, str):
            listed.add(item)
        elif isinstance(item, list):
            for x in item:
                walk(x)
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)

    walk(config["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == listed, f"not in nav: {pages - listed}; missing files: {listed - pages}"


def test_readme_commands_are_in_getting_started() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL)
    assert len(commands) == 2, commands
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    for command in commands:
        assert command in page, f"README command not in Getting started: {command}"


def test_readme_learn_more_links_the_docs_and_notebooks() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    learn = readme.split("## Learn more", 1)[1]
    for target in ("docs/", "notebooks/", "mkdocs", "quickstart.ipynb"):
        assert target in learn, target
    for notebook in ("quickstart.ipynb", "repeatability.ipynb", "scale_out.ipynb"):
        assert (ROOT / "notebooks" / notebook).exists()
        assert notebook in _handwritten()


def test_readme_runs_python_modules_with_the_virtualenvs_python() -> None:
    # the README installs into .venv and never activates it: a bare `python -m ...` would be
    # whatever python is on PATH, without mlflowkit
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    uses = re.findall(r"(\S*python3?) -m (\w+)", readme)
    assert ("python", "benchmarks") not in uses
    bare = [f"{py} -m {module}" for py, module in uses if module != "venv" and "/" not in py]
    assert not bare, f"README runs {bare} with the python on PATH, not .venv/bin/python"
    assert ".venv/bin/python -m benchmarks --quick" in readme


@pytest.mark.parametrize("class_name", ["PoolExecutor", "InlineExecutor"])
def test_plugin_guide_example_works(class_name: str) -> None:
    page = (DOCS / "guides" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    code = next(block for block in blocks if f"class {class_name}(" in block)
    module = types.ModuleType("docs_plugin_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "docs/guides/plugins.md", "exec"), module.__dict__)
        executor_class = getattr(module, class_name)
        assert issubclass(executor_class, mk.Executor)

        from mlflowkit.testing.dags import diamond

        plan = diamond.plan(n=5)
        expected = plan.run(store="memory://docs-plugin-local", progress=False)
        options = {"max_workers": 2} if class_name == "PoolExecutor" else {}
        with executor_class(**options) as executor:
            got = plan.run(executor=executor, store="memory://docs-plugin", progress=False)
        assert got.output == expected.output
        assert [s.output_digest for s in got.steps] == [s.output_digest for s in expected.steps]
    finally:
        del sys.modules[module.__name__]
