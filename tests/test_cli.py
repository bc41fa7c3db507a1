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
    assert text.exit_code == 0 and "fit  <- make_data  (alpha=0.1)\n" in text.output
    assert "score  <- fit, make_data\n" in text.output and "make_data.0" not in text.output
    mermaid = runner.invoke(main, ["plan", f"{DAG}:train", "--format", "mermaid"])
    assert mermaid.output.startswith("flowchart TD")
    dot = runner.invoke(main, ["plan", f"{DAG}:train", "--format", "dot"])
    assert dot.output.startswith('digraph "train"')


def test_executors_lists_local() -> None:
    result = CliRunner().invoke(main, ["executors"])
    assert result.exit_code == 0 and "local" in result.output.split()


# the command line's smaller promises -------------------------------------------------------

CHATTY = """
import mlflowkit as mk

print("loading the chatty module")


@mk.step
def text(n: int) -> str:
    return "x" * n


@mk.pipeline
def long_output(n: int = 1000) -> str:
    print("planning the chatty pipeline")
    return text(n)
"""


def test_a_param_that_does_not_fit_is_a_usage_error_with_status_2(tmp_path: Path) -> None:
    runner = CliRunner()
    store = str(tmp_path / "s")
    for bad, says in [
        ("n", "expected name=value, found 'n'"),
        ("=4", "expected name=value, found '=4'"),
        ("m=4", "has no parameter 'm'"),
        ("n=four", "expected int"),
    ]:
        for command in ("run", "plan"):
            result = runner.invoke(main, [command, f"{DAG}:chain", "-p", bad, "--store", store])
            assert result.exit_code == 2, (command, bad, result.output)
            assert says in result.output and "Traceback" not in result.output


def test_runs_alone_lists_the_runs(tmp_path: Path) -> None:
    runner = CliRunner()
    store = str(tmp_path / "s")
    assert (
        runner.invoke(main, ["run", f"{DAG}:chain", "-p", "n=2", "--store", store]).exit_code == 0
    )
    listed = runner.invoke(main, ["runs", "list", "--store", store])
    bare = runner.invoke(main, ["runs", "--store", store])
    assert bare.exit_code == 0, bare.output
    assert bare.output == listed.output and "chain" in bare.output
    alone = runner.invoke(main, ["runs"], env={"MLFLOWKIT_STORE": store})
    assert alone.exit_code == 0, alone.output
    assert alone.output == listed.output
    assert "Usage:" in runner.invoke(main, ["runs", "--help"]).output


def test_run_cuts_a_long_output_unless_full(tmp_path: Path) -> None:
    module = tmp_path / "chatty.py"
    module.write_text(CHATTY)
    runner = CliRunner()
    store = str(tmp_path / "s")
    cut = runner.invoke(main, ["run", f"{module}:long_output", "--store", store])
    assert cut.exit_code == 0, cut.output
    assert "x" * 1000 not in cut.output and "--full prints it whole" in cut.output
    whole = runner.invoke(main, ["run", f"{module}:long_output", "--store", store, "--full"])
    assert whole.exit_code == 0, whole.output
    assert f"output: {'x' * 1000!r}\n" in whole.output and "--full" not in whole.output
    short = runner.invoke(main, ["run", f"{module}:long_output", "-p", "n=5", "--store", store])
    assert "output: 'xxxxx'\n" in short.output and "--full" not in short.output


def test_plan_keeps_the_modules_prints_out_of_the_graph(tmp_path: Path) -> None:
    module = tmp_path / "chatty.py"
    module.write_text(CHATTY)
    for fmt, start in [("dot", 'digraph "long_output"'), ("mermaid", "flowchart TD")]:
        result = CliRunner().invoke(main, ["plan", f"{module}:long_output", "--format", fmt])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(start), result.stdout
        assert "chatty" not in result.stdout
        assert "loading the chatty module" in result.stderr
        assert "planning the chatty pipeline" in result.stderr


def test_python_dash_m_mlflowkit_is_the_command_line() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "mlflowkit", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mlflowkit, version 0.1.0"
    bad = subprocess.run(
        [sys.executable, "-m", "mlflowkit", "run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "Usage: mlflowkit run" in bad.stderr
