"""The ``threads`` executor: trivial steps run in the calling thread, others on the pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.executors import threads as threads_module
from mlflowkit.executors.threads import ThreadExecutor

_SLOW = {"on": False}


@mk.step(cache=False)
def where(i: int) -> int:
    """Trivial: the thread it ran in."""
    return threading.get_ident()


@mk.step(cache=False)
def sleepy(i: int) -> int:
    """Never trivial: 2 ms per call."""
    time.sleep(0.002)
    return threading.get_ident()


@mk.step(cache=False)
def turns_slow(i: int) -> int:
    """Trivial until the test switches it to 2 ms per call."""
    if _SLOW["on"]:
        time.sleep(0.002)
    return threading.get_ident()


@mk.pipeline
def fan_where(n: int) -> list[int]:
    return where.map(i=list(range(n)))


@mk.pipeline
def fan_sleepy(n: int) -> list[int]:
    return sleepy.map(i=list(range(n)))


@mk.pipeline
def fan_turns_slow(n: int) -> list[int]:
    return turns_slow.map(i=list(range(n)))


@pytest.fixture
def threads() -> Iterator[ThreadExecutor]:
    ex = ThreadExecutor(max_workers=2)
    try:
        yield ex
    finally:
        ex.shutdown()


def _runs_until_inline(pipeline: Any, ex: ThreadExecutor, store: Any, tries: int = 8) -> int:
    """Run until one run executes every call in this thread; return how many runs it took."""
    me = threading.get_ident()
    for attempt in range(1, tries + 1):
        idents = pipeline.plan(n=40).run(executor=ex, store=store, progress=False).output
        if set(idents) == {me}:
            return attempt
    pytest.fail(f"the trivial step never ran in the calling thread in {tries} runs")


def test_a_trivial_step_runs_on_the_pool_first_then_in_the_calling_thread(
    threads: ThreadExecutor, store: Any
) -> None:
    me = threading.get_ident()
    first = fan_where.plan(n=threads_module.INLINE_AFTER).run(
        executor=threads, store=store, progress=False
    )
    assert me not in set(first.output)  # nothing was known about the step yet
    _runs_until_inline(fan_where, threads, store)


def test_a_slow_step_never_runs_in_the_calling_thread(threads: ThreadExecutor, store: Any) -> None:
    me = threading.get_ident()
    for _ in range(3):
        idents = fan_sleepy.plan(n=20).run(executor=threads, store=store, progress=False).output
        assert me not in set(idents)


def test_a_trivial_step_that_turns_slow_goes_back_to_the_pool(
    threads: ThreadExecutor, store: Any
) -> None:
    me = threading.get_ident()
    _SLOW["on"] = False
    try:
        _runs_until_inline(fan_turns_slow, threads, store)
        _SLOW["on"] = True
        demoted = fan_turns_slow.plan(n=40).run(executor=threads, store=store, progress=False)
        assert demoted.output[:2] == [me, me]  # the two calls that showed it is slow ran here
        assert me not in set(demoted.output[2:])  # the rest went back to the pool
        again = fan_turns_slow.plan(n=10).run(executor=threads, store=store, progress=False)
        assert me not in set(again.output)
    finally:
        _SLOW["on"] = False


def _learn_inline(pipeline: Any, store: Any) -> None:
    ex = ThreadExecutor(max_workers=2)
    try:
        _runs_until_inline(pipeline, ex, store)
    finally:
        ex.shutdown()


def _first_run_inline(ex: ThreadExecutor | str, store: Any) -> bool:
    """Whether a first run of ``INLINE_AFTER`` calls of ``where`` ran any of them here."""
    me = threading.get_ident()
    run = fan_where.plan(n=threads_module.INLINE_AFTER).run(
        executor=ex, store=store, progress=False
    )
    return me in set(run.output)


def test_two_fresh_executors_behave_the_same_whatever_ran_before(store: Any) -> None:
    """What one executor learned is its own: a fresh one starts from nothing, every time."""
    before = ThreadExecutor(max_workers=2)
    try:
        assert before.inlined == frozenset()
        assert not _first_run_inline(before, store)
    finally:
        before.shutdown()
    _learn_inline(fan_where, store)  # another executor in this process finds `where` trivial
    after = ThreadExecutor(max_workers=2)
    try:
        assert after.inlined == frozenset()
        assert "0 steps run inline" in after.describe()
        assert not _first_run_inline(after, store)  # as for the executor built before
    finally:
        after.shutdown()
    assert not _first_run_inline("threads", store)  # by name: a fresh executor too


def test_what_an_executor_learned_is_visible_and_resettable(
    threads: ThreadExecutor, store: Any
) -> None:
    _runs_until_inline(fan_where, threads, store)
    assert threads.inlined == {where.qualified_name}
    assert "1 step run inline" in threads.describe()
    assert "1 step run inline" in repr(threads)
    threads.reset_inlining()
    assert threads.inlined == frozenset()
    assert not _first_run_inline(threads, store)  # learned again from the pool, from nothing
    _runs_until_inline(fan_where, threads, store)


def test_inlining_can_be_switched_off(store: Any) -> None:
    me = threading.get_ident()
    ex = mk.executors.get("threads", max_workers=2, inline=False)
    assert isinstance(ex, ThreadExecutor)
    try:
        for _ in range(3):
            idents = fan_where.plan(n=40).run(executor=ex, store=store, progress=False).output
            assert me not in set(idents)
        assert ex.inlined == frozenset()
        assert "inlining off" in ex.describe()
    finally:
        ex.shutdown()


def test_a_step_sent_back_to_the_pool_stays_there_until_reset(
    threads: ThreadExecutor, store: Any
) -> None:
    me = threading.get_ident()
    _SLOW["on"] = False
    try:
        _runs_until_inline(fan_turns_slow, threads, store)
        _SLOW["on"] = True
        fan_turns_slow.plan(n=10).run(executor=threads, store=store, progress=False)
        _SLOW["on"] = False  # fast again, but back on the pool for good in this executor
        for _ in range(3):
            again = fan_turns_slow.plan(n=40).run(executor=threads, store=store, progress=False)
            assert me not in set(again.output)
        assert threads.inlined == frozenset()
        threads.reset_inlining()  # until it is told to learn again
        _runs_until_inline(fan_turns_slow, threads, store)
    finally:
        _SLOW["on"] = False


def _fan_of_a_new_step() -> Any:
    """A pipeline over a step defined anew on each call (same name, a new step object)."""

    @mk.step(cache=False)
    def fresh(i: int) -> int:
        return threading.get_ident()

    @mk.pipeline
    def fan_fresh(n: int) -> list[int]:
        return fresh.map(i=list(range(n)))

    return fan_fresh


def test_a_redefined_step_is_learned_afresh(store: Any) -> None:
    me = threading.get_ident()
    _learn_inline(_fan_of_a_new_step(), store)
    redefined = _fan_of_a_new_step()  # e.g. a notebook cell run again: it may be slow now
    first = redefined.plan(n=threads_module.INLINE_AFTER).run(
        executor="threads", store=store, progress=False
    )
    assert me not in set(first.output)


def _workers_alive() -> set[str]:
    return {
        t.name
        for t in threading.enumerate()
        if t.name.startswith("mlflowkit-") and t.name[10:].isdigit()
    }


def test_threads_start_as_tasks_reach_the_pool_up_to_max_workers(store: Any) -> None:
    before = _workers_alive()
    ex = ThreadExecutor(max_workers=3)
    try:
        _runs_until_inline(fan_where, ex, store)
        assert len(ex._threads) <= 3
        ex.shutdown()
        assert not ex._threads
        # every call runs here now: a run starts no thread at all
        fan_where.plan(n=40).run(executor=ex, store=store, progress=False)
        assert not ex._threads and _workers_alive() == before
        # a step that is never trivial gets the pool, no bigger than max_workers
        fan_sleepy.plan(n=12).run(executor=ex, store=store, progress=False)
        assert len(ex._threads) == 3
    finally:
        ex.shutdown()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "4"])
def test_bad_max_workers_is_refused_not_a_hang(bad: Any, store: Any) -> None:
    """``max_workers=-3`` made a pool of no threads (the run waited forever); 0 silently meant
    the default. Both are refused, as ``processes`` refuses them, by name and by instance."""
    with pytest.raises(mk.ExecutorError, match=r"max_workers.*'threads'.*int >= 1 or None"):
        ThreadExecutor(max_workers=bad)
    with pytest.raises(mk.ExecutorError, match="max_workers"):
        fan_sleepy.plan(n=2).run(executor="threads", max_workers=bad, store=store, progress=False)
