"""The executor contract: where ready step calls run.

Layer 3: contracts only. The scheduler hands an executor one ready ``Task`` at a time through
``submit``; the executor runs ``mlflowkit.stepcall.execute`` wherever the task belongs (this
thread, a pool, a Dask worker, a GPU) and reports exactly one ``TaskResult`` through the
``on_done`` callback, from any thread. The scheduler never blocks inside ``submit``.

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
    """

    shares_memory: bool = True
    remote_values: bool = False
    gpus: int = 0
    can_timeout: bool = False
    parallel: bool = False


# Value handles are never changed once made. They are not ``frozen``: a frozen dataclass costs
# four times as much to construct, and a fan-out makes thousands of them per run.
@dataclass(slots=True, unsafe_hash=True)
class InMemory:
    """A value held in this process."""

    value: Any


@dataclass(slots=True, unsafe_hash=True)
class Stored:
    """A value to load from the store by digest."""

    digest: str


@dataclass(slots=True, unsafe_hash=True)
class Derived:
    """A cheap value to recompute: ``step.fn(**args)`` with ``args`` holding ``Input``s."""

    step: Step[Any, Any]
    args: dict[str, Any]


@dataclass(slots=True, unsafe_hash=True)
class Input:
    """An upstream value inside a task's argument template."""

    node: str
    digest: str
    handle: Any


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


class TaskHandle:
    """A handle on a submitted task; ``cancel()`` asks the executor to stop it if it can."""

    def cancel(self) -> bool:
        return False


DONE = TaskHandle()


class Executor(abc.ABC):
    """Base class of executors (built-in and plugins).

    Subclasses set ``name`` and ``capabilities`` and implement ``submit``; ``start`` and
    ``shutdown`` default to no-ops. An executor is used by one run at a time:
    ``start(store)`` → many ``submit`` → ``finish()``, then the next run or ``shutdown()``.
    """

    name: ClassVar[str] = "executor"
    capabilities: Capabilities = Capabilities()

    def start(self, store: ArtifactStore) -> None:  # noqa: B027 - optional hook
        """Prepare to run tasks that read from and write to ``store``."""

    @abc.abstractmethod
    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> TaskHandle:
        """Run ``task`` and call ``on_done`` with its ``TaskResult`` exactly once."""

    def run_here(self, task: Task) -> TaskResult | None:
        """Run ``task`` now, in the calling thread, and return its result; or return None.

        Optional. An executor that would run this task in the caller's thread anyway (``local``
        always, ``threads`` for steps it found trivial) runs it here, sparing the scheduler the
        round trip through ``submit`` and ``on_done``. None means: submit it. It may raise
        what ``submit`` would (e.g. a step asking for a GPU this executor does not have).
        """
        return None

    def flush(self) -> None:  # noqa: B027 - optional hook
        """The scheduler has no more ready tasks for now: send any batched submissions.

        Executors that batch or fuse small tasks (e.g. ``dask``) buffer in ``submit`` and send
        here; the scheduler calls it before it waits for the next completion.
        """

    def wait(self) -> None:  # noqa: B027 - optional hook
        """Block until work still running in the background (e.g. store writes) is done.

        The driver calls it before it records a run as finished; an error raised here (a
        failed background write) fails the run.
        """

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """The run was interrupted (Ctrl-C): drop the tasks that have not started, now.

        Called instead of ``wait()``, before ``finish()``; the scheduler no longer listens for
        results, so nothing needs reporting. Steps already running need not be waited for
        (``threads`` cannot stop its threads and leaves them to end on their own;
        ``processes`` kills the workers running them; ``dask`` cancels its Dask tasks).
        """

    def finish(self) -> None:  # noqa: B027 - optional hook
        """The run that ``start`` began is over: let go of what only that run needed.

        E.g. the inputs it loaded for the run's steps (``local`` and ``threads`` drop their
        resolver). The executor stays ready for the next ``start``. The driver calls it after
        every run, before ``shutdown`` when it owns the executor; tasks may still be in flight
        only when the run was interrupted. (``dask`` keeps the run's values on the workers
        until its next run, so that ``fetch`` can still bring one back.)
        """

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release workers and connections; called once after the run."""

    def fetch(self, handle: Any) -> Any:
        """Bring a value this executor produced into the driver process."""
        if isinstance(handle, InMemory):
            return handle.value
        raise TypeError(f"{type(self).__name__} cannot fetch {handle!r}")

    def describe(self) -> str:
        """A one-line description for records and progress displays."""
        return self.name

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
