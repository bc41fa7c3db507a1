"""``mlflowkit.testing.InMemoryExecutor``: the executor test double."""

from __future__ import annotations

import pytest

import mlflowkit as mk
from mlflowkit.testing import InMemoryExecutor, dags


def test_records_what_it_was_asked(store: mk.Store) -> None:
    ex = InMemoryExecutor()
    run = dags.fan.plan(n=3).run(executor=ex, store=store, progress=False)
    assert run.output == 6
    assert ex.submitted[0] == "numbers"
    assert {"double[0]", "double[1]", "double[2]", "total"} <= set(ex.submitted)
    assert [r.name for r in ex.results] == ex.submitted
    assert all(r.ok for r in ex.results)
    assert ex.starts == 1 and ex.shutdowns == 0  # inline: the scheduler never had to flush
    again = dags.fan.plan(n=3).run(executor=ex, store=store, progress=False)
    assert {s.status for s in again.steps} == {"cached"}
    assert len(ex.submitted) == len(ex.results)  # nothing new was submitted


def test_injected_failure_behaves_like_the_steps_own(store: mk.Store) -> None:
    ex = InMemoryExecutor(failures={"add-2": KeyError})
    with pytest.raises(mk.RunFailed) as info:
        dags.diamond.plan(n=2).run(executor=ex, store=store, progress=False)
    assert isinstance(info.value.__cause__, KeyError)
    assert "injected failure of step 'add-2'" in str(info.value.__cause__)
    assert info.value.run.step("add-2").status == "failed"


def test_failing_the_first_attempts_exercises_retries(store: mk.Store) -> None:
    ex = InMemoryExecutor()
    ex.fail("flaky", ValueError("first"), times=1)
    run = dags.retrying.plan(x=4).run(executor=ex, store=store, progress=False)
    assert run.output == 4
    assert run.step("flaky").attempts == 3  # one injected failure, then the step's own two


def test_an_injected_failure_keeps_the_step_identity(store: mk.Store) -> None:
    ex = InMemoryExecutor()
    ex.fail("double", times=1)
    with pytest.raises(mk.RunFailed):
        dags.fan.plan(n=2).run(executor=ex, store=store, progress=False)
    local = dags.fan.plan(n=2).run(executor="local", store=store, progress=False)
    assert local.step("numbers").status == "cached"  # same keys as the real step


def test_declared_gpus_pass_the_placement_check(store: mk.Store) -> None:
    on_gpu = mk.step(resources={"gpu": 1}, name="on_gpu")(dags.identity)

    @mk.pipeline
    def p(x: int = 2) -> int:
        return on_gpu(x)  # type: ignore[no-any-return]

    with pytest.raises(mk.ExecutorError, match="GPU"):
        p.plan().run(executor=InMemoryExecutor(), store=store, progress=False)
    assert p.plan().run(executor=InMemoryExecutor(gpus=1), store=store, progress=False).output == 2
