"""The executor contract: where ready step calls run.

Layer 3: contracts only. The scheduler hands an executor one ready ``Task`` at a time through
``submit``; the executor runs ``mlflowkit.stepcall.execute`` wherever the task belongs (this
thread, a pool, a Dask worker, a GPU) and reports exactly one ``TaskResult`` through the
``on_done`` callback, from any thread. The scheduler never blocks inside ``submit``.

Invariants
----------
* Only ``submit`` is required; every other method of ``Executor`` has a default that is right
  for an executor that runs each task and reports it (see ``Executor`` for who calls what).
* A run calls ``start`` once before its first task and ``finish`` once after its last report
  (also when it failed or was interrupted); nothing else is called outside that window except
  ``shutdown`` and ``describe``.

Value handles
-------------
A task's arguments are templates whose upstream values are ``Input`` objects. Each carries the
upstream content digest and a *handle* saying where the value is:

* ``InMemory(value)`` — the value itself, in this process;
* ``Stored(digest)`` — load it from the store (a cache hit);
* ``Derived(step, args)`` — recompute a cheap derived value (``ref[0]``) from its inputs;
* anything else an executor created for its own results (e.g. a Dask future).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry
    from mlflowkit.step import Step
    from mlflowkit.store.base import ArtifactStore

__all__ = [
    "Capabilities",
    "Derived",
    "Executor",
    "InMemory",
    "Input",
    "Stored",
    "Task",
    "TaskHandle",
    "TaskResult",
]


@dataclass(frozen=True)
class Capabilities:
    """What an executor can do; the scheduler and placement checks read these.

    Attributes
    ----------
    shares_memory:
        Results live in the driver process (values can be passed without the store).
    remote_values:
        Results stay where they were computed (workers) and are passed by handle.
    gpus:
        Number of GPUs the executor can place steps on.
    can_timeout:
        ``timeout`` hints are enforced by stopping the work.
    parallel:
        Several tasks may run at once.
    inline:
        Every task runs in the calling thread (``run_here`` never returns None). The scheduler
        then leaves a step call's store lookup to single flight's locked lookup (``Cache.claim``):
        a call that is not in the pipeline's pack is looked up once, not twice.
    ordered:
        Tasks run in this process and each queue starts them in the order they were submitted
        (first in, first out). The scheduler then takes the single-flight locks of many misses
        at once, in this thread, before submitting them (``Cache.prefetch(hold=True)``): a
        task submitted later never starts, and waits for another run's lock, before those.
    """

    shares_memory: bool = True
    remote_values: bool = False
    gpus: int = 0
    can_timeout: bool = False
    parallel: bool = False
    inline: bool = False
    ordered: bool = False


# Value handles are never changed once made. They are not ``frozen``: a frozen dataclass costs
# four times as much to construct, and a fan-out makes thousands of them per run. Each pickles
# as a call of its class with its fields (``__reduce__``): the ``__getstate__``/``__setstate__``
# that ``slots=True`` adds cost four times as much, for every input of every task sent to
# another process.
@dataclass(slots=True, unsafe_hash=True)
class InMemory:
    """A value held in this process."""

    value: Any

    def __reduce__(self) -> tuple[Any, ...]:
        return (InMemory, (self.value,))


@dataclass(slots=True, unsafe_hash=True)
class Stored:
    """A value to load from the store by digest."""

    digest: str

    def __reduce__(self) -> tuple[Any, ...]:
        return (Stored, (self.digest,))


@dataclass(slots=True, unsafe_hash=True)
class Derived:
    """A cheap value to recompute: ``step.fn(**args)`` with ``args`` holding ``Input``s."""

    step: Step[Any, Any]
    args: dict[str, Any]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Derived, (self.step, self.args))


@dataclass(slots=True, unsafe_hash=True)
class Input:
    """An upstream value inside a task's argument template."""

    node: str
    digest: str
    handle: Any

    def __reduce__(self) -> tuple[Any, ...]:
        return (Input, (self.node, self.digest, self.handle))


@dataclass(slots=True)
class Task:
    """One step call, ready to run.

    ``store_value``: write the output to the store; ``cache_entry``: record the key → digest
    cache entry (``stored`` says whether the value itself is in the store).
    """

    name: str
    step: Step[Any, Any]
    key: str
    run_id: str
    args: dict[str, Any]
    store_value: bool = True
    cache_entry: bool = True
    single_flight: bool = False
    #: parameters to check against the step's annotations before it runs (their values come
    #: from derived nodes whose type planning could not know; see ``Node.checks``)
    checks: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # a call of its class with its fields, as the value handles above: a batch of tasks
        # sent to another process pickles a quarter smaller and twice as fast as by slots
        return (
            Task,
            (
                self.name,
                self.step,
                self.key,
                self.run_id,
                self.args,
                self.store_value,
                self.cache_entry,
                self.single_flight,
                self.checks,
            ),
        )


@dataclass(slots=True)
class TaskResult:
    """What happened to one task. ``value`` is a handle to the output (e.g. ``InMemory``)."""

    name: str
    ok: bool
    output_digest: str | None = None
    value: Any = None
    attempts: int = 1
    duration_s: float = 0.0
    started_at: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    traceback: str | None = None
    cached: bool = False
    #: the cache entry found under the single-flight lock (``cached``), for the run's pack
    entry: CacheEntry | None = None


class TaskHandle:
    """Accepted from ``submit`` for executors written against the earlier contract; unused.

    ``submit`` returns None. The scheduler never cancelled a submitted task (a run that stops
    early calls ``finish(interrupted=True)`` instead), so a handle returned is ignored.
    """

    def cancel(self) -> bool:
        """Never called by mlflowkit; kept so that existing subclasses still import."""
        return False


class Executor(abc.ABC):
    """Base class of executors (built-in and plugins): where ready step calls run.

    A minimal executor sets ``name`` and implements ``submit``. A run calls, in order:
    ``start(store)``; for each ready task ``run_here`` and, when that returns None, ``submit``;
    ``flush()`` whenever the scheduler is about to wait for a result; ``finish(interrupted=…)``
    once when the run is over. A run given an executor by name built it and calls
    ``shutdown()`` after ``finish``; an instance passed in serves further runs until its owner
    shuts it down (``with mk.executors.get(...) as ex:`` does).

    The methods, who calls them, and why each exists:

    ``submit(task, on_done)`` (required; the scheduler)
        Run the task wherever this executor runs things and report its ``TaskResult`` through
        ``on_done`` exactly once, from any thread. Must not block. Returns None.
    ``start(store)`` (the driver, before the run's first task)
        The store the run's tasks read from and write to. The default keeps it in
        ``self.store``, which is all an executor that calls ``stepcall.execute`` needs;
        executors that set up workers, connections or per-run caches override it.
    ``run_here(task)`` (the scheduler, before ``submit``)
        Run the task now, in the calling thread, and return its result; or None to have it
        submitted. ``local`` runs everything here and ``threads`` the calls it found to take
        microseconds: this spares them the round trip through ``on_done`` and the scheduler's
        queue, which costs more than such a call. The default returns None.
    ``flush()`` (the scheduler, when no task is ready and it is about to wait for a result)
        Send what ``submit`` buffered: ``dask`` batches many small tasks into one Dask task
        and can only do so if it knows when a burst of submissions has ended. Default: nothing.
    ``finish(interrupted=False)`` (the driver, once after every run, also a failed one)
        The run is over: let go of what only it needed (e.g. the inputs ``local`` and
        ``threads`` loaded for its steps). With ``interrupted=True`` (Ctrl-C, or the run
        stopped on an error of mlflowkit itself) also drop the tasks that have not started,
        without reporting them: nobody listens any more, and running steps are not waited
        for. ``threads`` empties its queue, ``processes`` kills the workers running a step,
        ``dask`` cancels the run's Dask tasks. Default: nothing.
    ``shutdown()`` (the driver for an executor it built, ``with`` blocks, the owner)
        Release workers and connections, after waiting for work that goes on in the
        background (``gpu`` writes outputs in the background); an error raised here fails the
        run the driver shut it down for. May be called more than once. Default: nothing.
    ``describe()`` (``repr``)
        A one-line description for people, saying how the executor is set up and what it
        learned. The default is ``name``.

    Not in the contract (earlier versions had them): ``wait`` and ``interrupt``, now
    ``shutdown`` and ``finish(interrupted=True)``; ``fetch``, which nothing in a run calls
    (``dask`` and ``gpu`` keep theirs, as their own API).
    """

    name: ClassVar[str] = "executor"
    capabilities: Capabilities = Capabilities()
    #: the store of the current run (set by the default ``start``)
    store: ArtifactStore | None = None

    def start(self, store: ArtifactStore) -> None:
        """Prepare to run tasks that read from and write to ``store`` (kept in ``self.store``)."""
        self.store = store

    @abc.abstractmethod
    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> TaskHandle | None:
        """Run ``task`` and call ``on_done`` with its ``TaskResult`` exactly once; return None."""

    def run_here(self, task: Task) -> TaskResult | None:
        """Run ``task`` now, in the calling thread, and return its result; or return None.

        None means: submit it. It may raise what ``submit`` would (e.g. a step asking for a
        GPU this executor does not have).
        """
        return None

    def flush(self) -> None:  # noqa: B027 - optional hook
        """The scheduler has no more ready tasks for now: send any buffered submissions."""

    def finish(self, *, interrupted: bool = False) -> None:  # noqa: B027 - optional hook
        """The run that ``start`` began is over: drop what only it needed.

        ``interrupted``: the run stopped early; drop the tasks that have not started (without
        reporting them) and do not wait for the running ones, here or in ``shutdown``.
        """

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Wait for background work, then release workers and connections; idempotent."""

    def describe(self) -> str:
        """A one-line description for people (``repr`` shows it)."""
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
