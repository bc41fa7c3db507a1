from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mlflowkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
DAG = str(ROOT / "tests" / "resources" / "dag_basic.py")


def test_help_on_every_command() -> None:
    runner = CliRunner()
    for args in ([], ["run"], ["plan"], ["executors"], ["runs"], ["lineage"], ["store"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_run_parses_params_against_annotations(tmp_path: Path) -> None:
    runner = CliRunner()
    store = str(tmp_path / "s")
    result = runner.invoke(main, ["run", f"{DAG}:chain", "-p", "n=4", "--store", store])
    assert result.exit_code == 0, result.output
    assert "output: 4" in result.output and "4 executed" in result.output
    again = runner.invoke(main, ["run", f"{DAG}:chain", "-p", "n=4", "--store", store])
    assert "0 executed, 4 cached" in again.output


def test_bad_params_give_one_clear_message(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["run", f"{DAG}:chain", "-p", "m=4"])
    assert result.exit_code != 0
    assert "has no parameter 'm'" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["run", f"{DAG}:chain", "-p", "n=four"])
    assert "expected int" in result.output
    result = runner.invoke(main, ["run", f"{DAG}:nope"])
    assert "no attribute 'nope'" in result.output and "chain" in result.output


def test_plan_formats() -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["plan", f"{DAG}:train"])
    assert text.exit_code == 0 and "fit  <- make_data.0, make_data.1" in text.output
    mermaid = runner.invoke(main, ["plan", f"{DAG}:train", "--format", "mermaid"])
    assert mermaid.output.startswith("flowchart TD")
    dot = runner.invoke(main, ["plan", f"{DAG}:train", "--format", "dot"])
    assert dot.output.startswith('digraph "train"')


def test_executors_lists_local() -> None:
    result = CliRunner().invoke(main, ["executors"])
    assert result.exit_code == 0 and "local" in result.output.split()
