"""The first hour of a new user: each mistake gives a message that names the problem, the place
and the fix.

One test per mistake, through the public API (and the command line where a newcomer meets it
there first). Messages are matched on the facts they must carry, not word for word.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mlflowkit as mk
from mlflowkit.cli import main as cli

HERE = Path(__file__).name
ROOT = Path(__file__).resolve().parent.parent


@mk.step
def make_data(n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, 3))
    return X, X @ np.array([1.0, -2.0, 0.5])


@mk.step
def fit(X: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)


@mk.step
def score(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((X @ w - y) ** 2))


@mk.step
def summary(w: np.ndarray) -> dict[str, float]:
    return {"norm": float(np.linalg.norm(w))}


@mk.pipeline
def train(n_samples: int = 50, alpha: float = 0.1) -> float:
    X, y = make_data(n_samples)
    return score(fit(X, y, alpha=alpha), X, y)


def _message(info: pytest.ExceptionInfo[BaseException]) -> str:
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# typos and types: caught while planning
# ---------------------------------------------------------------------------------------------
def test_typo_in_a_pipeline_parameter() -> None:
    with pytest.raises(mk.WiringError) as info:
        train.plan(n_sample=20)  # type: ignore[call-arg]
    text = _message(info)
    assert "Pipeline 'train'" in text and "'n_sample'" in text  # what
    assert f"{HERE}:" in text  # where: this line
    assert "Did you mean 'n_samples' instead of 'n_sample'?" in text  # how to fix
    assert info.value.location and HERE in info.value.location


def test_typo_in_a_step_parameter() -> None:
    @mk.pipeline
    def typo(n_samples: int = 20) -> float:
        X, y = make_data(n_samples)
        return score(fit(X, y, alpah=0.1), X, y)  # type: ignore[call-arg]

    with pytest.raises(mk.WiringError) as info:
        typo.plan()
    text = _message(info)
    assert "Step 'fit'" in text and "'alpah'" in text and "fit(X, y, alpha)" in text
    assert f"{HERE}:" in text
    assert "Did you mean 'alpha' instead of 'alpah'?" in text
    assert info.value.step == "fit"


def test_wrong_type_of_a_value() -> None:
    @mk.pipeline
    def wrong(n_samples: int = 20) -> float:
        X, y = make_data(n_samples)
        return score(fit(X, y, alpha="0.1"), X, y)  # type: ignore[arg-type]

    with pytest.raises(mk.WiringError) as info:
        wrong.plan()
    text = _message(info)
    assert "Step 'fit', parameter 'alpha'" in text
    assert "expected float, found str ('0.1')" in text
    assert f"{HERE}:" in text and "Pass a value of the annotated type" in text
    assert info.value.parameter == "alpha"


def test_wrong_type_of_a_pipeline_parameter() -> None:
    with pytest.raises(mk.WiringError) as info:
        train.plan(n_samples="50")  # type: ignore[arg-type]
    text = _message(info)
    assert "Pipeline 'train', parameter 'n_samples'" in text
    assert "expected int, found str ('50')" in text
    assert f"{HERE}:" in text and "Pass a value of the annotated type" in text


def test_wrong_wiring_between_steps() -> None:
    @mk.pipeline
    def miswired(n_samples: int = 20) -> float:
        X, y = make_data(n_samples)
        return score(summary(fit(X, y)), X, y)  # type: ignore[arg-type]

    with pytest.raises(mk.WiringError) as info:
        miswired.plan()
    text = _message(info)
    assert "Step 'score', parameter 'w'" in text
    assert "expected numpy.ndarray" in text and "dict[str, float]" in text
    assert "the output of step 'summary'" in text and f"{HERE}:" in text
    assert "Fix the wiring" in text


def test_a_ref_in_control_flow() -> None:
    @mk.pipeline
    def branching(n_samples: int = 20) -> float:
        X, y = make_data(n_samples)
        w = fit(X, y)
        if w:  # the value does not exist while planning
            return score(w, X, y)
        return 0.0

    with pytest.raises(mk.PlanningError) as info:
        branching.plan()
    text = _message(info)
    assert "'fit'" in text and "condition" in text and f"{HERE}:" in text
    assert "Fix: branch on pipeline parameters, or move the decision into a step" in text


@pytest.mark.parametrize(
    ("use", "what", "fix"),
    [
        (
            lambda y: y.mean(),
            "cannot have its method 'mean' called",
            "call .mean(...) inside a step",
        ),
        (lambda y: np.mean(y), "cannot be passed to np.mean()", "call NumPy inside a step"),
        (lambda y: np.sqrt(y), "cannot be passed to np.sqrt()", "call NumPy inside a step"),
        (lambda y: np.asarray(y), "cannot be converted to a NumPy array", "inside a step"),
        (
            lambda y: 1.0 if score(y, y, y) > 0.5 else 0.0,
            "cannot be compared with >",
            "Fix: branch on a pipeline parameter, or make the comparison and the decision "
            "inside a step",
        ),
        (lambda y: float(score(y, y, y)), "cannot be converted with float()", "inside a step"),
        (lambda y: y + 1, "operator __add__", "do the arithmetic in a step"),
    ],
)
def test_using_a_ref_like_its_value_says_what_to_do_instead(
    use: object, what: str, fix: str
) -> None:
    @mk.pipeline
    def p(n_samples: int = 20) -> object:
        _, y = make_data(n_samples)
        return use(y)  # type: ignore[operator]

    with pytest.raises(mk.PlanningError) as info:
        p.plan()
    text = _message(info)
    assert what in text and fix in text, text
    assert f"{HERE}:" in text and "does not exist yet" in text


@pytest.mark.parametrize(
    ("value", "found", "fix"),
    [
        ((i for i in range(3)), "found an iterator", "Pass a list (e.g. list(values))"),
        (map(float, "12"), "found an iterator", "Pass a list"),
        (None, "found an open file", "Pass the file's path (a str or pathlib.Path)"),
    ],
)
def test_a_generator_or_open_file_input_says_what_to_pass_instead(
    store: mk.Store, tmp_path: Path, value: object, found: str, fix: str
) -> None:
    @mk.step
    def total(xs: object) -> float:
        return 0.0

    @mk.pipeline
    def p(xs: object) -> float:
        return total(xs)

    with open(tmp_path / "data.csv", "w") as handle, pytest.raises(mk.RunFailed) as info:
        p.plan(xs=handle if value is None else value).run(store=store, progress=False)
    text = str(info.value.__cause__)
    assert isinstance(info.value.__cause__, mk.HashingError)
    assert "Step 'total', parameter 'xs'" in text and found in text and fix in text
    assert "register_hasher" not in text
    if value is None:
        assert "mk.File(path)" in text


def test_cli_parameter_typo_and_type() -> None:
    target = f"{ROOT / 'tests' / HERE}:train"
    runner = CliRunner()
    typo = runner.invoke(cli, ["plan", target, "-p", "n_sample=5"])
    assert typo.exit_code == 2  # a malformed command line
    assert "has no parameter 'n_sample'" in typo.output and "n_samples" in typo.output
    wrong = runner.invoke(cli, ["plan", target, "-p", "n_samples=many"])
    assert wrong.exit_code == 2
    assert "expected int, found 'many'" in wrong.output and "-p n_samples=3" in wrong.output
    assert "Traceback" not in typo.output + wrong.output


# ---------------------------------------------------------------------------------------------
# values mlflowkit cannot hash
# ---------------------------------------------------------------------------------------------
class Calibration:
    """A user class mlflowkit has no encoding for."""

    def __init__(self, offset: float) -> None:
        self.offset = offset


@mk.step
def calibrate(w: np.ndarray, cal: Calibration) -> np.ndarray:
    return w - cal.offset


def test_unhashable_input_names_the_step_parameter_and_fix(store: mk.Store) -> None:
    @mk.pipeline
    def calibrated(n_samples: int = 20) -> np.ndarray:
        X, y = make_data(n_samples)
        return calibrate(fit(X, y), Calibration(0.5))

    plan = calibrated.plan()  # planning does not hash values: the run does, then explain
    with pytest.raises(mk.RunFailed) as failed:
        plan.run(store=store, progress=False)
    assert isinstance(failed.value.__cause__, mk.HashingError)
    assert failed.value.run.status == "failed"  # the record says so too, never "running"
    assert store.run(failed.value.run.id).status == "failed"
    assert failed.value.run.step("calibrate").status == "failed"
    with pytest.raises(mk.HashingError) as explained:
        plan.explain(store)
    for error in (failed.value.__cause__, explained.value):
        assert isinstance(error, mk.HashingError)
        text = str(error)
        assert "Step 'calibrate', parameter 'cal'" in text  # where
        assert f"{HERE}:" in text
        assert "cannot hash a value of type" in text and "Calibration" in text  # what
        assert "mk.register_hasher(Calibration)(fn)" in text  # how to fix
        assert "__mlflowkit_hash__" in text
        assert error.type_name is not None and "Calibration" in error.type_name


def test_registering_a_hasher_fixes_it(store: mk.Store) -> None:
    class Offset:
        def __init__(self, value: float) -> None:
            self.value = value

    @mk.step
    def shift(w: np.ndarray, by: Offset) -> np.ndarray:
        return w - by.value

    @mk.pipeline
    def shifted(n_samples: int = 20) -> np.ndarray:
        X, y = make_data(n_samples)
        return shift(fit(X, y), Offset(0.5))

    with pytest.raises(mk.RunFailed, match="Step 'shift', parameter 'by'") as failed:
        shifted.plan().run(store=store, progress=False)
    assert isinstance(failed.value.__cause__, mk.HashingError)
    mk.register_hasher(Offset)(lambda o: o.value)
    run = shifted.plan().run(store=store, progress=False)
    assert run.step("shift").status == "executed"
    assert shifted.plan().run(store=store, progress=False).step("shift").cached


# ---------------------------------------------------------------------------------------------
# a step that raises
# ---------------------------------------------------------------------------------------------
def test_a_failing_step_names_the_step_and_the_error(store: mk.Store) -> None:
    @mk.step
    def fragile(w: np.ndarray) -> float:
        raise ValueError("Input contains NaN")

    @mk.pipeline
    def breaks(n_samples: int = 20) -> float:
        X, y = make_data(n_samples)
        return fragile(fit(X, y))

    with pytest.raises(mk.RunFailed) as info:
        breaks.plan().run(store=store, progress=False)
    text = _message(info)
    assert "failed at step 'fragile'" in text and "ValueError: Input contains NaN" in text
    assert "run again to resume" in text
    assert f'{HERE}", line' in text  # the step's own traceback, pointing at the raise
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.step == "fragile"
    assert info.value.run.step("fragile").status == "failed"
    assert info.value.run.step("fit").status == "executed"


def test_cli_prints_a_failing_step_as_one_message(tmp_path: Path) -> None:
    source = tmp_path / "pipe.py"
    source.write_text(
        textwrap.dedent(
            """
            import mlflowkit as mk

            @mk.step
            def fragile(n: int) -> int:
                raise ValueError("bad data")

            @mk.pipeline
            def breaks(n: int = 1) -> int:
                return fragile(n)
            """
        )
    )
    args = ["run", f"{source}:breaks", "--store", str(tmp_path / "store"), "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "failed at step 'fragile': ValueError: bad data" in result.output
    assert f"raised at {source}:6 in fragile" in result.output
    assert "--debug" in result.output and "Traceback" not in result.output
    debug = CliRunner().invoke(cli, [*args, "--debug"])
    assert isinstance(debug.exception, mk.RunFailed)


def test_cli_errors_in_user_code_point_at_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import mlflowkit as mk\nx = 1 / 0\n")
    result = CliRunner().invoke(cli, ["run", f"{broken}:train"])
    assert result.exit_code == 1
    assert "importing" in result.output and "ZeroDivisionError: division by zero" in result.output
    assert f"(at {broken}:2)" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------
def test_a_file_in_the_way_of_the_store(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(mk.StoreError) as info:
        train.plan().run(store=str(blocker / "store"), progress=False)
    text = _message(info)
    assert str(blocker) in text  # the path
    assert "writable folder" in text and "$MLFLOWKIT_STORE" in text  # the fix
    assert info.value.url == str(blocker / "store")


def test_cli_store_commands_give_one_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    runner = CliRunner()
    for args in (
        ["store", "verify", "--store", str(blocker)],
        ["runs", "list", "--store", str(blocker)],
        ["runs", "show", "nope", "--store", str(tmp_path / "empty")],
        ["lineage", "abc123", "--store", str(tmp_path / "empty")],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "StoreError" in result.output and "Traceback" not in result.output
        assert "--debug" in result.output


# ---------------------------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------------------------
def test_dask_not_installed() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["dask"] = None            # as if dask were not installed
        sys.modules["distributed"] = None
        import mlflowkit as mk
        from tests.test_first_hour import train

        assert "dask" not in mk.executors.available(), mk.executors.available()
        try:
            train.plan().run(executor="dask", store="memory://no-dask", progress=False)
        except mk.ExecutorError as exc:
            print(exc)
        """
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Executor 'dask' needs dask and distributed" in out.stdout
    assert "pip install 'mlflowkit[dask]'" in out.stdout


def test_no_gpu_fails_before_anything_runs(store: mk.Store, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    @mk.step
    def touch(n: int) -> int:
        marker.write_text("ran")
        return n

    @mk.step(resources={"gpu": 1})
    def on_gpu(n: int) -> int:
        return n

    @mk.pipeline
    def gpu_job(n: int = 1) -> int:
        return on_gpu(touch(n))

    with pytest.raises(mk.ExecutorError) as info:
        gpu_job.plan().run(executor="threads", store=store, progress=False)
    text = _message(info)
    assert "Step 'on_gpu'" in text and "resources={'gpu': 1}" in text  # what, where
    assert "Nothing was run" in text
    assert "executor='gpu'" in text and "pip install 'mlflowkit[gpu]'" in text  # the fix
    assert info.value.step == "on_gpu"
    assert not marker.exists() and store.runs() == []


def test_unknown_executor_lists_the_known_ones() -> None:
    with pytest.raises(mk.ExecutorError) as info:
        train.plan().run(executor="thread", store="memory://typo", progress=False)
    text = _message(info)
    assert "Unknown executor 'thread'" in text and "'threads'" in text and "'local'" in text
    assert "mlflowkit.executors" in text


@pytest.mark.parametrize(("given", "meant"), [("Threads", "threads"), ("proceses", "processes")])
def test_a_misspelled_executor_gets_a_suggestion(given: str, meant: str) -> None:
    with pytest.raises(mk.ExecutorError) as info:
        train.plan().run(executor=given, store="memory://typo", progress=False)
    assert f"Unknown executor {given!r}: Did you mean {meant!r}?" in _message(info)


def test_current_outside_a_step() -> None:
    with pytest.raises(mk.MlflowkitError, match=r"outside a running step.*plan\.run"):
        mk.current()


def test_cli_run_says_where_the_record_and_outputs_are(tmp_path: Path) -> None:
    store = tmp_path / "store"
    target = f"{ROOT / 'tests' / HERE}:train"
    result = CliRunner().invoke(cli, ["run", target, "--store", str(store), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = list((store / "runs").glob("*.json"))
    assert len(records) == 1
    run_id = records[0].stem
    assert f"record: {records[0]}" in result.output
    digest = mk.Store(str(store)).run(run_id).steps[-1].output_digest
    assert digest is not None and f"output digest: {digest}" in result.output
    assert f"mlflowkit runs show {run_id} --store {store}" in result.output
    assert f"mlflowkit lineage {digest[:12]} --store {store}" in result.output
    lineage = CliRunner().invoke(cli, ["lineage", digest[:12], "--store", str(store)])
    assert lineage.exit_code == 0 and "from score" in lineage.output
    assert "from fit" in lineage.output and "from make_data" in lineage.output


def _pipeline_in_module(module_name: str) -> mk.Pipeline[..., int]:
    """The same pipeline source, loaded as module ``module_name`` (a script, then an import)."""
    import types

    source = textwrap.dedent(
        """
        import mlflowkit as mk

        @mk.step
        def count(n: int) -> int:
            return n + 1

        @mk.pipeline
        def counting(n: int = 1) -> int:
            return count(n)
        """
    )
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module
    try:
        exec(compile(source, f"{module_name}.py", "exec"), module.__dict__)
    finally:
        del sys.modules[module_name]
    pipeline: mk.Pipeline[..., int] = module.counting
    return pipeline


def test_explain_says_when_a_step_identity_changed(store: mk.Store) -> None:
    _pipeline_in_module("__mk_script__").plan().run(store=store, progress=False)
    explained = {e["step"]: e for e in _pipeline_in_module("pipeline_mod").plan().explain(store)}
    why = explained["count"]["why"]
    assert explained["count"]["action"] == "execute"
    assert "step identity changed (__mk_script__:count -> pipeline_mod:count)" in why
    assert "run as a script" in why
