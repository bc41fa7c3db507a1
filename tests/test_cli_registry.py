"""The artifacts, promote and reproduce commands."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflowkit.cli import main

PIPELINES = textwrap.dedent(
    """
    import mlflowkit as mk

    @mk.step
    def make(n: int) -> list[int]:
        return list(range(n))

    @mk.step
    def total(xs: list[int]) -> int:
        return sum(xs)

    @mk.pipeline
    def produce(n: int = 4) -> int:
        return mk.publish("cli-model", total(make(n)), metadata={"n": n})
    """
)

GATES = textwrap.dedent(
    """
    import mlflowkit as mk

    @mk.gate("cli-model", to="prototype")
    def big_enough(v: mk.ArtifactVersion) -> bool:
        return v.metadata["n"] >= 4
    """
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # outside any git tree
    (tmp_path / "pipes.py").write_text(PIPELINES)
    (tmp_path / "gates_cli.py").write_text(GATES)
    return tmp_path


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_of_the_registry_commands() -> None:
    for args in (["artifacts"], ["artifacts", "show"], ["promote"], ["reproduce"]):
        assert "Usage:" in _ok([*args, "--help"])


def test_artifacts_promote_and_history(project: Path) -> None:
    store = str(project / "s")
    assert "no named artifacts" in _ok(["artifacts", "--store", store])
    _ok(["run", "pipes.py:produce", "-p", "n=2", "--store", store])
    _ok(["run", "pipes.py:produce", "-p", "n=5", "--store", store])
    listing = _ok(["artifacts", "list", "--store", store])
    assert "cli-model" in listing and "v2" in listing
    shown = _ok(["artifacts", "show", "cli-model@1", "--store", store])
    assert "cli-model@1" in shown and "{'n': 2}" in shown
    runner = CliRunner()
    skipped = runner.invoke(main, ["promote", "cli-model@1", "--to", "prototype", "--store", store])
    assert skipped.exit_code == 1 and "one rung at a time" in skipped.output
    for v in ("1", "2"):
        _ok(["promote", f"cli-model@{v}", "--to", "poc", "--store", store])
    refused = runner.invoke(
        main,
        [
            "promote",
            "cli-model@1",
            "--to",
            "prototype",
            "--gates",
            "gates_cli.py",
            "--store",
            store,
        ],
    )
    assert refused.exit_code == 1, refused.output
    assert "big_enough" in refused.output and "FAILED" in refused.output
    assert "nothing changed" in refused.output
    done = _ok(
        [
            "promote",
            "cli-model@2",
            "--to",
            "prototype",
            "--reason",
            "bigger",
            "--gates",
            "gates_cli.py",
            "--store",
            store,
        ]
    )
    assert "cli-model@2: poc -> prototype" in done and "big_enough" in done
    history = _ok(["artifacts", "history", "cli-model", "--store", store])
    assert "bigger" in history and "poc -> prototype" in history
    unknown = runner.invoke(main, ["artifacts", "show", "nope", "--store", store])
    assert unknown.exit_code == 1 and "cli-model" in unknown.output


def test_reproduce_prints_every_step(project: Path) -> None:
    store = str(project / "s")
    _ok(["run", "pipes.py:produce", "--store", store])
    from mlflowkit import Store

    run_id = Store(store).runs()[0].id
    out = _ok(["reproduce", run_id, "--store", store])
    assert "make" in out and "total" in out and "reproduces" in out
