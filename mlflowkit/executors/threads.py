"""The ``threads`` executor: a pool of threads in this process; trivial calls run inline.

Invariants
----------
* Each task runs ``stepcall.execute`` once, on a pool thread or (``run_here``) in the
  scheduler's thread, and is reported through ``on_done`` exactly once; the scheduler's queue
  is the only state shared with the pool threads.
* Threads start as tasks reach the pool, up to ``max_workers``; a run whose calls all run
  inline starts none.
* What decides inlining belongs to the executor instance: it is learned from the calls this
  instance ran, shown by ``inlined`` and ``describe()``, cleared by ``reset_inlining()`` and
  switched off by ``inline=False``. Nothing is shared between instances, so a fresh executor
  behaves the same whatever ran before it in the process.

Timeouts: a thread cannot be stopped from outside in Python, so ``threads`` does not enforce
``timeout`` hints (``capabilities.can_timeout`` is False).
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflowkit.executors.base import Capabilities, Executor, Task, TaskResult
from mlflowkit.executors.limits import check_max_workers, refuse_gpu
from mlflowkit.stepcall import execute, local_resolver

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["INLINE_AFTER", "INLINE_DEMOTE_S", "INLINE_MAX_S", "ThreadExecutor"]

#: A step whose calls all took at most this long (seconds) is *trivial* (see ThreadExecutor).
INLINE_MAX_S = 50e-6
#: Calls on the pool a step needs before it can be found trivial.
INLINE_AFTER = 16
#: A trivial step's call taking longer than this (seconds) makes it go back to the pool.
INLINE_DEMOTE_S = 1e-3

_Item = tuple[Task, Callable[[TaskResult], None]]
_UNSEEN: list[int] = []


class ThreadExecutor(Executor):
    """Run steps on a pool of threads in this process (up to ``max_workers`` threads, started
    as tasks reach the pool).

    The threads take tasks from one shared queue (no future per task), so a burst of small
    ready tasks — a fan-out — costs little more than the steps themselves.

    Trivial steps run in the calling thread: handing a call that takes microseconds to another
    thread costs more than the call (and under the GIL nothing runs alongside it). A step is
    trivial once ``INLINE_AFTER`` of its calls ran on this executor's pool, none failed and nine
    in ten took at most ``INLINE_MAX_S`` (pool threads wait for the GIL, so some fast calls
    measure slow); one of its calls failing, or two in a row taking more than
    ``INLINE_DEMOTE_S`` in the calling thread, sends it back to the pool for good (until
    ``reset_inlining()``). What is learned stays with this instance: keep one executor across
    runs (``with mk.executors.get("threads") as ex``) to keep it; a run given
    ``executor="threads"`` builds a new executor that starts from nothing.

    Parameters
    ----------
    max_workers:
        Most threads at once (default: ``min(32, CPUs + 4)``).
    inline:
        Run calls found trivial in the calling thread. False sends every call to the pool and
        learns nothing.

    Attributes
    ----------
    inlined:
        Qualified names of the steps this executor runs in the calling thread now.
    """

    name = "threads"
    capabilities = Capabilities(shares_memory=True, parallel=True, ordered=True)

    def __init__(self, max_workers: int | None = None, *, inline: bool = True) -> None:
        check_max_workers(max_workers, self.name, "min(32, CPUs + 4)")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self.inline = bool(inline)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._growing = threading.Lock()
        self._store: ArtifactStore | None = None
        self._resolve: Callable[[Any], Any] | None = None
        # per step (by its qualified name): [calls seen on the pool, how many were fast]; None
        # once it went back to the pool for good
        self._timing: dict[str, list[int] | None] = {}
        # the steps found trivial: derived from _timing, kept as a set so that deciding costs
        # one lookup per call
        self._inline: set[str] = set()
        self._slow: set[str] = set()  # trivial steps whose last call took too long
        self._interrupted = False  # the last run was interrupted: shutdown() does not wait

    # --- what it learned ------------------------------------------------------------------------
    @property
    def inlined(self) -> frozenset[str]:
        """Qualified names of the steps whose calls run in the calling thread now."""
        return frozenset(self._inline)

    def reset_inlining(self) -> None:
        """Forget what was learned: every step's calls go to the pool until learned again."""
        self._inline.clear()
        self._slow.clear()
        self._timing.clear()

    def describe(self) -> str:
        """E.g. ``threads (up to 8 threads; 2 steps run inline)``."""
        if not self.inline:
            return f"threads (up to {self.max_workers} threads; inlining off)"
        count = len(self._inline)
        return (
            f"threads (up to {self.max_workers} threads; "
            f"{count} step{'' if count == 1 else 's'} run inline)"
        )

    # --- the executor contract ------------------------------------------------------------------
    def start(self, store: ArtifactStore) -> None:
        self._store = store
        self._resolve = local_resolver(store)
        self._interrupted = False

    def finish(self, *, interrupted: bool = False) -> None:
        """Drop the values loaded for the run; when interrupted, also the queued tasks (a
        thread still running a step ends when the step does, and is not waited for)."""
        if interrupted:
            self._interrupted = True
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        self._resolve = None

    def run_here(self, task: Task) -> TaskResult | None:
        """Run a trivial step's call in the calling thread (see the class doc); else None."""
        step = task.step
        if step.hints.gpus:
            refuse_gpu(task, self.name)
        name = step._qualified_name
        if name not in self._inline:
            return None
        result = execute(task, self._store, self._resolve)
        slow = result.duration_s > INLINE_DEMOTE_S
        if not result.ok or (slow and name in self._slow):
            self._inline.discard(name)  # not trivial after all
            self._timing[name] = None
        elif slow:  # once may be a pause (the GC, another process): twice in a row is not
            self._slow.add(name)
        elif self._slow:
            self._slow.discard(name)
        return result

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        result = self.run_here(task)
        if result is not None:
            on_done(result)
            return
        self._queue.put((task, on_done))
        if len(self._threads) < self.max_workers:
            self._grow()

    def shutdown(self) -> None:
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        if self._interrupted:  # Ctrl-C: a thread cannot be stopped, and is not waited for
            return
        for thread in threads:
            thread.join()

    # --- the pool -------------------------------------------------------------------------------
    def _grow(self) -> None:
        """Start one more worker thread (up to ``max_workers``)."""
        with self._growing:
            if len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"mlflowkit-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while self._work_one(self._queue.get()):
            pass

    def _work_one(self, item: _Item | None) -> bool:
        """Run one queued task; False to stop. A call of its own, so that an idle worker
        holds nothing of the last task it ran (its inputs and output)."""
        if item is None:
            return False
        task, on_done = item
        try:
            result = execute(task, self._store, self._resolve)
        except BaseException as exc:  # a failure of the machinery itself: still report once
            # (a BaseException ending this thread would leave the run waiting for ever)
            result = TaskResult(
                task.name, False, attempts=0, error=exc, traceback=traceback.format_exc()
            )
        if self.inline:
            self._learn(task, result)
        on_done(result)
        return True

    def _learn(self, task: Task, result: TaskResult) -> None:
        """Count a call that ran on the pool towards its step being trivial."""
        name = task.step._qualified_name
        seen = self._timing.get(name, _UNSEEN)
        if seen is None:
            return
        if not result.ok:
            self._timing[name] = None
            return
        if seen is _UNSEEN:
            seen = self._timing[name] = [0, 0]
        seen[0] += 1
        seen[1] += result.duration_s <= INLINE_MAX_S
        trivial = seen[0] >= INLINE_AFTER and seen[1] * 10 >= seen[0] * 9
        if trivial and self._timing.get(name) is seen:  # and not demoted or reset meanwhile
            self._inline.add(name)
