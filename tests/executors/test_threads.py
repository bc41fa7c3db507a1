"""The ``threads`` executor: trivial steps run in the calling thread, others on the pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.executors import pool as pool_module
from mlflowkit.executors.pool import ThreadExecutor

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
    first = fan_where.plan(n=pool_module.INLINE_AFTER).run(
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
