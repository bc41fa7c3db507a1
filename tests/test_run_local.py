from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from tests.resources import dag_basic, dag_runs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "counters"
    d.mkdir()
    monkeypatch.setattr(dag_runs, "COUNTER_DIR", d)
    return d


def test_run_records_match_the_api(store: Any) -> None:
    run = dag_basic.train.plan(n=50).run(store=store)
    assert isinstance(run, mk.Run) and run.status == "succeeded"
    assert isinstance(run.output, float)
    assert [s.name for s in run.steps] == dag_basic.train.plan(n=50).steps
    for s in run.steps:
        assert isinstance(s, mk.StepRun)
        assert s.status == "executed" and not s.cached and s.attempts == 1
        assert len(s.key or "") == 64 and len(s.output_digest or "") == 64
        assert s.duration_s >= 0 and s.error is None
    assert run.step("score").output_digest == mk.hash_value(run.output)
    again = dag_basic.train.plan(n=50).run(store=store)
    assert [s.status for s in again.steps] == ["cached"] * len(again.steps)
    assert again.output == run.output
    assert [s.key for s in again.steps] == [s.key for s in run.steps]


def test_shorthand_call_returns_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOWKIT_STORE")  # the tests' own default store
    assert dag_basic.chain(n=5) == 5
    assert (tmp_path / ".mlflowkit").is_dir()


def test_env_var_selects_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOWKIT_STORE", str(tmp_path / "envstore"))
    run = dag_basic.chain.plan(n=3).run()
    assert run.store is not None and "envstore" in run.store.url


def test_early_cutoff_keeps_downstream_cached(store: Any, counters: Path) -> None:
    dag_runs.cutoff.plan(n=4).run(store=store)  # sum 6 -> parity 0
    run = dag_runs.cutoff.plan(n=5).run(store=store)  # sum 10 -> parity 0 again
    assert run.step("source").status == "executed"
    assert run.step("parity").status == "executed"
    assert run.step("downstream").status == "cached"
    assert dag_runs.count(counters, "downstream") == 1


def test_failed_step_raises_run_failed_chaining_the_exception(store: Any, counters: Path) -> None:
    with pytest.raises(mk.RunFailed) as info:
        dag_runs.failing.plan(x=3).run(store=store)
    err = info.value
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "boom 3"
    assert err.step == "boom" and "boom 3" in str(err)
    assert "Traceback" in str(err)
    run = err.run
    assert run.status == "failed"
    assert run.step("ok").status == "executed" and run.step("boom").status == "failed"
    assert run.step("boom").error == "ValueError: boom 3"
    recorded = store.run(run.id)
    assert recorded.status == "failed"
    # running again resumes: the finished step is cached
    with pytest.raises(mk.RunFailed) as info2:
        dag_runs.failing.plan(x=3).run(store=store)
    assert info2.value.run.step("ok").status == "cached"
    assert dag_runs.count(counters, "ok") == 1


def test_steps_after_a_failure_are_skipped(store: Any, counters: Path) -> None:
    @mk.pipeline
    def p() -> Any:
        return dag_runs.ok(dag_runs.boom(1))

    with pytest.raises(mk.RunFailed) as info:
        p.plan().run(store=store)
    assert info.value.run.step("ok").status == "skipped"
    assert dag_runs.count(counters, "ok") == 0


def test_retries_are_counted(store: Any, counters: Path) -> None:
    run = dag_runs.retrying.plan(marker="m1").run(store=store)
    assert run.output == "done" and run.step("flaky").attempts == 3


def test_cache_false_always_executes_and_is_recorded(store: Any, counters: Path) -> None:
    first = dag_runs.uncached.plan().run(store=store)
    second = dag_runs.uncached.plan().run(store=store)
    assert first.step("side_effect").status == second.step("side_effect").status == "executed"
    assert dag_runs.count(counters, "side_effect") == 2
    assert second.step("side_effect").output_digest == mk.hash_value(1)


def test_force_re_executes(store: Any, counters: Path) -> None:
    dag_runs.cutoff.plan().run(store=store)
    run = dag_runs.cutoff.plan().run(store=store, force=["parity"])
    assert run.step("source").status == "cached"
    assert run.step("parity").status == "executed"
    assert run.step("downstream").status == "cached"
    run = dag_runs.cutoff.plan().run(store=store, force=True)
    assert {s.status for s in run.steps} == {"executed"}
    with pytest.raises(mk.WiringError, match="nope"):
        dag_runs.cutoff.plan().run(store=store, force=["nope"])
    with pytest.raises(mk.WiringError, match="Did you mean 'parity' instead of 'parityy'"):
        dag_runs.cutoff.plan().run(store=store, force=["parityy"])


def test_current_and_rng_are_seeded_from_the_key(store: Any, counters: Path) -> None:
    run = dag_runs.context.plan().run(store=store)
    noisy, who = run.output
    assert who["name"] == "whoami" and who["run_id"] == run.id
    assert who["key"] == run.step("whoami").key
    forced = dag_runs.context.plan().run(store=store, force=True)
    assert forced.output[0] == noisy  # same key, same random stream
    with pytest.raises(mk.MlflowkitError, match="outside a running step"):
        mk.current()


def test_hints_do_not_change_keys(store: Any) -> None:
    def body(x: int) -> int:
        return x

    plain = mk.step(body)
    hinted = mk.step(retries=3, retry_delay=1.0, timeout=5.0)(body)

    @mk.pipeline
    def p1() -> Any:
        return plain(1)

    @mk.pipeline
    def p2() -> Any:
        return hinted(1)

    k1 = p1.plan().run(store=store).step("body").key
    with pytest.warns(UserWarning, match=r"'body' set timeout=, but the 'local' executor"):
        run2 = p2.plan().run(store=store)
    assert run2.step("body").key == k1 and run2.step("body").status == "cached"


def test_gpu_step_fails_before_anything_runs_on_a_cpu_executor(store: Any, counters: Path) -> None:
    @mk.step(resources={"gpu": 1})
    def on_gpu(x: int) -> int:
        return x

    @mk.pipeline
    def p() -> Any:
        return on_gpu(dag_runs.ok(1))

    with pytest.raises(mk.ExecutorError) as info:
        p.plan().run(store=store)
    assert info.value.step == "on_gpu" and "mlflowkit[gpu]" in str(info.value)
    assert dag_runs.count(counters, "ok") == 0


def test_explain_says_why(store: Any) -> None:
    plan = dag_runs.cutoff.plan(n=4)
    first = plan.explain(store)
    assert [e["action"] for e in first] == ["execute"] * 3
    assert "no earlier run" in first[0]["why"]
    assert "upstream step 'source'" in first[1]["why"]
    plan.run(store=store)
    assert [e["action"] for e in dag_runs.cutoff.plan(n=4).explain(store)] == ["hit"] * 3
    changed = dag_runs.cutoff.plan(n=5).explain(store)
    assert changed[0]["action"] == "execute" and "param 'n' changed" in changed[0]["why"]
    assert "source" in str(changed)


def test_duplicate_calls_in_one_run_execute_once(store: Any, counters: Path) -> None:
    @mk.pipeline
    def p() -> Any:
        return dag_runs.ok(7), dag_runs.ok(7)

    run = p.plan().run(store=store)
    assert run.output == (7, 7)
    assert dag_runs.count(counters, "ok") == 1
    assert {run.step("ok").status, run.step("ok-2").status} == {"executed", "cached"}


def test_fully_cached_rerun_in_a_fresh_interpreter_executes_nothing(tmp_path: Path) -> None:
    store_url = str(tmp_path / "s")
    code = (
        "import json, sys\n"
        "from tests.resources import dag_basic\n"
        f"run = dag_basic.train.plan(n=64).run(store={store_url!r}, progress=False)\n"
        "print(json.dumps([s.status for s in run.steps] + [run.output]))\n"
    )
    outs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outs.append(json.loads(out.stdout))
    assert set(outs[0][:-1]) == {"executed"}
    assert set(outs[1][:-1]) == set(outs[2][:-1]) == {"cached"}
    assert outs[0][-1] == outs[1][-1] == outs[2][-1]


def test_run_output_is_loaded_from_the_store_by_a_later_reader(store: Any) -> None:
    run = dag_runs.arrays.plan(n=100).run(store=store)
    record = store.run(run.id)
    reloaded = mk.Run(record, store)
    assert reloaded.output == run.output == float(sum(range(100)))


def test_explain_sees_through_a_run_time_fan_out_and_cache_false(store: Any) -> None:
    plan = dag_basic.fan.plan(n=5)
    before = {e["step"]: e["action"] for e in plan.explain(store)}
    assert before["square"] == "execute"
    plan.run(store=store, progress=False)
    after = {e["step"]: e for e in dag_basic.fan.plan(n=5).explain(store)}
    assert after["square"]["action"] == "hit", after["square"]
    assert after["total"]["action"] == "hit"
    uncached = dag_runs.uncached.plan().explain(store)
    assert uncached[0]["why"] == "cache=False: always executes"


def test_a_script_and_its_import_share_the_cache(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(
        "import sys\n"
        "import mlflowkit as mk\n\n"
        "@mk.step\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n\n"
        "@mk.pipeline\n"
        "def p(x: int = 3) -> int:\n"
        "    return double(x)\n\n"
        "if __name__ == '__main__':\n"
        "    run = p.plan().run(store=sys.argv[1], progress=False)\n"
        "    print(run.steps[0].status)\n"
    )
    store = str(tmp_path / "s")
    first = subprocess.run(
        [sys.executable, str(script), store], capture_output=True, text=True, check=True
    )
    assert first.stdout.strip() == "executed"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import pipeline\n"
        "print(pipeline.p.plan().run(store=sys.argv[2], progress=False).steps[0].status)\n"
    )
    second = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), store],
        capture_output=True,
        text=True,
        check=True,
    )
    assert second.stdout.strip() == "cached"


@mk.step(cache=False)
def _freeze_count() -> int:
    import gc

    return gc.get_freeze_count()


@mk.pipeline
def _freeze_probe() -> int:
    return _freeze_count()


def test_a_run_sets_the_heap_aside_from_the_gc_and_hands_it_back(store: Any) -> None:
    import gc

    assert gc.get_freeze_count() == 0
    inside = _freeze_probe.plan().run(store=store, progress=False).output
    assert inside > 0  # what existed before the run was frozen while it ran
    assert gc.get_freeze_count() == 0  # and given back to the collector after it


def test_a_run_leaves_objects_frozen_by_someone_else_alone(store: Any) -> None:
    import gc

    gc.freeze()
    try:
        before = gc.get_freeze_count()  # (frozen objects that die leave the count)
        assert 0 < _freeze_probe.plan().run(store=store, progress=False).output <= before
        assert 0 < gc.get_freeze_count() <= before  # the run did not unfreeze them
    finally:
        gc.unfreeze()


def test_a_run_with_the_gc_disabled_freezes_nothing(store: Any) -> None:
    import gc

    gc.disable()
    try:
        assert _freeze_probe.plan().run(store=store, progress=False).output == 0
    finally:
        gc.enable()


class _Blob:
    """An intermediate value a test can watch (weak references)."""

    def __mlflowkit_hash__(self) -> str:
        return "blob"


_BLOBS: list[Any] = []


@mk.step(cache=False)
def _make_blob() -> _Blob:
    import weakref

    blob = _Blob()
    _BLOBS.append(weakref.ref(blob))
    return blob


@mk.step(cache=False)
def _use_blob(blob: _Blob) -> int:
    return 1


@mk.pipeline
def _blob_chain() -> int:
    return _use_blob(_make_blob())


def test_a_run_keeps_no_intermediate_value_alive(store: Any) -> None:
    import gc

    _BLOBS.clear()
    run = _blob_chain.plan().run(store=store, progress=False)
    assert run.output == 1
    gc.collect()
    assert len(_BLOBS) == 1 and _BLOBS[0]() is None  # freed although the run is still held


@mk.step(cache=False)
def _make_blobs() -> list[_Blob]:
    import weakref

    blobs = [_Blob(), _Blob()]
    _BLOBS.extend(weakref.ref(blob) for blob in blobs)
    return blobs


@mk.pipeline
def _blob_item() -> int:
    return _use_blob(_make_blobs()[0])  # the item reaches the step as a view the executor loads


@pytest.mark.parametrize("name", ["local", "threads"])
def test_an_executor_kept_between_runs_holds_no_value_of_a_finished_run(
    store: Any, name: str
) -> None:
    import gc

    _BLOBS.clear()
    executor = mk.executors.get(name)
    try:
        run = _blob_item.plan().run(executor=executor, store=store, progress=False)
        assert run.output == 1
        gc.collect()
        assert len(_BLOBS) == 2 and all(ref() is None for ref in _BLOBS)
    finally:
        executor.shutdown()


_SEEN_WHILE_PLANNING: list[int] = []


@mk.pipeline
def _freeze_probe_planning() -> int:
    import gc

    _SEEN_WHILE_PLANNING.append(gc.get_freeze_count())  # a pipeline body runs while planning
    return _freeze_count()


def test_planning_sets_the_heap_aside_from_the_gc_and_hands_it_back() -> None:
    import gc

    _SEEN_WHILE_PLANNING.clear()
    _freeze_probe_planning.plan()
    assert _SEEN_WHILE_PLANNING[0] > 0
    assert gc.get_freeze_count() == 0


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr here")

    def __mlflowkit_hash__(self) -> int:
        return 1


def _deep_list(depth: int) -> list[Any]:
    top: list[Any] = []
    level = top
    for _ in range(depth):
        level.append([])
        level = level[0]
    return top


@mk.step
def _first_type(x: Any) -> str:
    return type(x).__name__


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (10**5000, "<int of 16610 bits>"),
        (_ReprRaises(), "whose repr() raised RuntimeError>"),
        (_deep_list(100_000), "nested more than 64 levels deep>"),
    ],
    ids=["int-of-5001-digits", "repr-raises", "list-100000-deep"],
)
def test_parameters_with_no_repr_or_no_depth_limit_run_and_are_recorded(
    store: Any, value: Any, shown: str
) -> None:
    @mk.pipeline
    def p(x: Any) -> str:
        return _first_type(x)

    run = p.plan(x=value).run(store=store, progress=False)
    assert run.output == type(value).__name__
    assert shown in json.dumps(run.record.params)
    assert shown in json.dumps(store.run(run.id).params)

    @mk.pipeline
    def wrong(x: str) -> str:
        return _first_type(x)

    with pytest.raises(mk.WiringError, match=r"parameter 'x' .*expected str, found"):
        wrong.plan(x=value)
