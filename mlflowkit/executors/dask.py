"""The ``dask`` executor: steps run on a Dask cluster and their outputs stay on the workers.

With ``_dask_worker`` (the functions shipped to the workers), the only module of mlflowkit
that imports ``dask`` and ``distributed`` (inside functions; the parts that need neither live in
``_dask_parts``).

How a run flows
---------------
``submit`` only buffers; ``flush`` (called by the scheduler before it waits) sends the buffered
tasks as *batches*: one Dask task runs several mlflowkit tasks that do not depend on each other
(``stepcall.execute`` for each, on the worker, writing to the store from the worker). The batch's
result -- the output values and a summary per task -- stays in that worker's memory as the
Dask future's result. A second, tiny Dask task per batch extracts the summaries (digest, meta,
attempts, duration, error and traceback text) and only that comes back to the client. A
downstream task names its inputs as ``DaskRef(batch id, index)`` handles; the payload carries
them as references to the batches it reads (``_dask_parts.pack``), whose futures are passed to
``client.submit``, so Dask moves values worker to worker. Once a batch is reported, the client
keeps its payload (to rebuild it after a loss), not its tasks.

Invariants
----------
* Output values never pass through the client process; only summaries do (and ``fetch``, when
  its caller explicitly asks for a value).
* Each submitted task is reported through ``on_done`` exactly once: by its batch's summary, by
  a batch failure, by a timeout, or by ``shutdown``.
* Tasks with a ``timeout`` or ``resources`` hint run alone in their batch (so cancelling or
  placing one never affects another). Others are batched per step: at least ``4 x threads``
  batches while a step's duration is unknown, one task per batch for steps known to take
  10 ms or more, about 20 ms of work per batch for steps known to be faster.
* A batch that Dask re-runs (its worker died) does not recompute what it already finished in
  this run: before executing, the worker looks for a cache entry written by this run for the
  task's key and loads that output from the store instead.
* Dask blames every task *assigned* to a worker that dies, started or not (``KilledWorker``
  after ``distributed.scheduler.allowed-failures``). Every batch announces its start to the
  client synchronously, so: a batch that never started is sent again; a started batch of
  several calls is split, one call per Dask task; a single started call that this run had
  already finished (its value was lost and recomputing it met the dying workers) is sent
  again; any other single started call is the culprit and fails, naming the step; an input
  lost for good is rebuilt from its batch (same ``DaskRef`` id) before its consumer is sent
  again. Each at most ``_MAX_RESENDS`` times.
* The store must be reachable from the workers (a shared folder or an object store URL); a
  process-private store (``memory://``) is refused at ``start``.

Timeouts: the client waits with a deadline, counted from when the worker *starts* the task (a
start event the worker sends), and then cancels the Dask task and fails the step with a
``TimeoutError``. Dask cannot interrupt a running Python function: the worker thread keeps
running the step's function until it returns on its own; its result is then discarded (an
output it writes to the store is still a correct, content-addressed result). Until then that
thread stays busy; a function that never returns holds it until the worker is restarted
(``client.restart_workers``) or the cluster is closed.
"""

from __future__ import annotations

import itertools
import math
import pickle
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflowkit.cache import Cache
from mlflowkit.errors import ExecutorError
from mlflowkit.executors._dask_parts import DaskRef, Sent, pack, unguarded_main
from mlflowkit.executors._dask_worker import STARTED_TOPIC, batch_item, batch_summaries, run_batch
from mlflowkit.executors._remote import store_is_shareable, timeout_error
from mlflowkit.executors.base import (
    Capabilities,
    Derived,
    Executor,
    InMemory,
    Stored,
    Task,
    TaskResult,
)

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

# distributed's API is only partly annotated: its clients and futures are handled as Any.
Client = Any
Future = Any

__all__ = ["DaskExecutor", "DaskRef"]

_SLOW_TASK_S = 0.010  # steps at least this slow are not batched
_BATCH_WORK_S = 0.020  # work worth one Dask task when batching steps known to be fast
_MAX_RESENDS = 3  # times a batch is sent again after Dask gave up on it (KilledWorker)


class DaskExecutor(Executor):
    """Run steps on a Dask cluster; outputs stay on the workers.

    Parameters
    ----------
    address:
        A running scheduler (``"tcp://host:8786"``) to connect to now; ``None`` starts a
        ``distributed.LocalCluster`` (worker processes) at ``start`` and closes it at
        ``shutdown``.
    timeout:
        Seconds to wait for the scheduler when connecting.
    n_workers, threads_per_worker:
        Size of the local cluster (ignored with ``address``). ``max_workers`` is an alias of
        ``n_workers`` (what ``plan.run(max_workers=...)`` passes).
    **cluster_kwargs:
        More ``LocalCluster`` options, e.g. ``resources={"gpu": 1}`` (per worker) or
        ``memory_limit``.

    Raises
    ------
    ExecutorError
        The scheduler at ``address`` cannot be reached within ``timeout``.
    """

    name = "dask"
    capabilities = Capabilities(
        shares_memory=False, remote_values=True, can_timeout=True, parallel=True
    )

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        max_workers: int | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        self.address = address
        self.timeout = float(timeout)
        self.n_workers = max_workers if max_workers is not None else n_workers
        self.threads_per_worker = threads_per_worker
        self.cluster_kwargs = cluster_kwargs
        self._client: Client | None = None
        self._cluster: Any = None
        self._store_blob: bytes | None = None
        self._store: ArtifactStore | None = None
        self._lock = threading.RLock()
        self._pending: list[tuple[Task, Callable[[TaskResult], None]]] = []
        self._batches: dict[str, Sent] = {}  # by id (the key in DaskRef handles)
        self._by_dask_key: dict[str, Sent] = {}  # every Dask key a batch ever had
        self._threads = 1
        self._resources: list[dict[str, float]] = []
        self._durations: dict[str, tuple[float, int]] = {}
        self._watch: threading.Thread | None = None
        self._watch_wake = threading.Event()
        self._closed = False
        self._ids = itertools.count()
        if address is not None:
            self._connect()

    # --- connection ---------------------------------------------------------------------------
    def _connect(self) -> None:
        import distributed

        lib: Any = distributed  # only partly annotated
        if self.address is not None:
            try:
                client = lib.Client(self.address, timeout=self.timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(
                    f"Could not reach the Dask scheduler at {self.address!r} within "
                    f"{self.timeout:g} s ({type(exc).__name__}: {exc}). Expected a running "
                    f"scheduler at that address: start one (`dask scheduler`, then "
                    f"`dask worker {self.address}`), check the host, port and firewall, or "
                    f"omit address= to start a local cluster for the run.",
                    executor=self.name,
                ) from exc
        else:
            options: dict[str, Any] = {"processes": True, "dashboard_address": ":0"}
            options.update(self.cluster_kwargs)
            if options["processes"]:
                self._refuse_unguarded_main()
            try:
                cluster = lib.LocalCluster(
                    n_workers=self.n_workers,
                    threads_per_worker=self.threads_per_worker,
                    **options,
                )
            except Exception as exc:
                raise ExecutorError(
                    f"Could not start a local Dask cluster with n_workers={self.n_workers}, "
                    f"threads_per_worker={self.threads_per_worker} and {self.cluster_kwargs}: "
                    f"{exc}. Check the options, or connect to a running cluster with address=.",
                    executor=self.name,
                ) from exc
            self._cluster = cluster
            client = lib.Client(cluster, set_as_default=False)
        self._client = client
        self._closed = False
        try:
            client.subscribe_topic(STARTED_TOPIC, self._on_started)
            self._read_workers()
        except BaseException:
            self.shutdown()  # never leave a half-open connection or cluster behind
            raise

    def _refuse_unguarded_main(self) -> None:
        """A script that starts a local cluster outside ``if __name__ == "__main__":`` would
        have every worker process run it again: say so in one line, before starting any."""
        import dask

        method = str(dask.config.get("distributed.worker.multiprocessing-method", "spawn"))
        where = unguarded_main(method)
        if where is not None:
            raise ExecutorError(
                f"executor='dask' starts a local cluster whose worker processes import your "
                f'script again, and {where} runs outside `if __name__ == "__main__":`, so '
                f"each worker would run it too. Put the code that runs the pipeline under "
                f'`if __name__ == "__main__":` (or pass address= of a running cluster).',
                executor=self.name,
            )

    def _read_workers(self) -> None:
        assert self._client is not None
        workers = list(self._client.scheduler_info(n_workers=-1)["workers"].values())
        if not workers:
            try:
                self._client.wait_for_workers(1, timeout=self.timeout)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(
                    f"The Dask scheduler at {self._client.scheduler.address!r} has no workers "
                    f"(waited {self.timeout:g} s). Expected at least one; start some with "
                    f"`dask worker <scheduler address>`.",
                    executor=self.name,
                ) from exc
            workers = list(self._client.scheduler_info(n_workers=-1)["workers"].values())
        self._resources = [dict(w.get("resources") or {}) for w in workers]
        self._threads = max(1, sum(int(w.get("nthreads", 1)) for w in workers))
        gpus = sum(float(r.get("gpu", 0)) for r in self._resources)
        self.capabilities = Capabilities(
            shares_memory=False,
            remote_values=True,
            gpus=int(gpus),
            can_timeout=True,
            parallel=True,
        )

    @property
    def client(self) -> Client:
        """The ``distributed.Client`` in use (after ``start``, or at once with ``address``)."""
        if self._client is None:
            raise ExecutorError(
                "The dask executor is not started: call start(store) or run a plan with it.",
                executor=self.name,
            )
        return self._client

    def start(self, store: ArtifactStore) -> None:
        blob = store_is_shareable(store)
        if blob is None:
            raise ExecutorError(
                f"The dask executor needs a store its workers can open, found "
                f"{None if store is None else store.url!r}, which is private to this process. "
                f"Use a folder the workers can reach or an object-store URL (e.g. "
                f"'s3://bucket/x').",
                executor=self.name,
            )
        with self._lock:
            self._store_blob = blob
            self._store = store
            self._batches.clear()  # values of an earlier run are not needed any more
            self._by_dask_key.clear()
        if self._client is None:
            self._connect()
        else:
            self._read_workers()

    # --- submitting ---------------------------------------------------------------------------
    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        self._check_resources(task)
        with self._lock:
            self._pending.append((task, on_done))

    def _check_resources(self, task: Task) -> None:
        wanted = dict(task.step.hints.resources)
        if not wanted:
            return
        if self._client is not None and not any(
            all(float(res.get(k, 0)) >= float(v) for k, v in wanted.items())
            for res in self._resources
        ):
            offered = [r for r in self._resources if r] or "no resources"
            raise ExecutorError(
                f"Step {task.name!r} asks for resources={wanted}, but no worker of the Dask "
                f"cluster offers that much (workers offer: {offered}). Start workers with "
                f'matching resources (`dask worker ... --resources "gpu=1"`, or '
                f"LocalCluster(resources={{'gpu': 1}})), or lower the step's resources hint.",
                executor=self.name,
                step=task.name,
            )

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        groups: dict[int, list[tuple[Task, Callable[[TaskResult], None]]]] = {}
        solo: list[list[tuple[Task, Callable[[TaskResult], None]]]] = []
        for item in pending:
            hints = item[0].step.hints
            if hints.timeout is not None or hints.resources:
                solo.append([item])
            else:
                groups.setdefault(id(item[0].step), []).append(item)
        batches = list(solo)
        for items in groups.values():
            size = self._batch_size(items[0][0], len(items))
            batches.extend(items[i : i + size] for i in range(0, len(items), size))
        for items in batches:
            self._send(items)

    def _batch_size(self, task: Task, ready: int) -> int:
        """How many of ``ready`` calls of ``task``'s step to run per Dask task.

        At least ``4 x threads`` batches while the step's duration is unknown; one call per
        batch for steps known to be slow; for steps known to be fast, enough calls to make
        a batch worth about ``_BATCH_WORK_S`` of work (Dask's own cost per task is ~1 ms).
        """
        spread = math.ceil(ready / (4 * self._threads))
        with self._lock:
            total, count = self._durations.get(task.step.qualified_name, (0.0, 0))
        if not count:
            return spread
        mean = total / count
        if mean >= _SLOW_TASK_S:
            return 1
        return min(ready, max(spread, math.ceil(_BATCH_WORK_S / max(mean, 1e-6))))

    def _send(
        self, items: list[tuple[Task, Callable[[TaskResult], None]]], requeues: int = 0
    ) -> None:
        sent = Sent(items, requeues)
        with self._lock:
            self._batches[sent.id] = sent
        try:
            sent.payload, sent.deps = pack([task for task, _ in items], self._check_held)
            self._submit(sent, summary=True)
        except Exception as exc:
            self._fail_batch(sent, exc, traceback.format_exc())

    def _submit(self, sent: Sent, *, summary: bool) -> None:
        """Send ``sent``'s payload as a new Dask task (and, unless rebuilding, its summary
        task), reading the current futures of the batches it depends on."""
        client = self.client
        with self._lock:
            for key in sent.deps:
                self._check_held(key)
            futures = [self._batches[key].future for key in sent.deps]
        dask_key = f"mlflowkit-{sent.label}-{uuid.uuid4().hex}"
        with self._lock:
            self._by_dask_key[dask_key] = sent
            sent.dask_key = dask_key
            sent.started = False
            sent.deadline = None
        sent.future = client.submit(
            run_batch,
            dask_key,
            # out of band: Dask sends the payload's own bytes, without copying it into the
            # pickled graph (and a scheduler in this process keeps the bytes it received)
            pickle.PickleBuffer(sent.payload),
            self._store_blob,
            *futures,
            key=dask_key,
            pure=False,
            resources=sent.resources,
        )
        if summary:
            sent.summary = client.submit(
                batch_summaries, sent.future, key=f"{dask_key}-summary", pure=False
            )
            sent.summary.add_done_callback(
                lambda fut, sent=sent, key=dask_key: self._on_summary(sent, key, fut)
            )

    def _check_held(self, key: str) -> None:
        """Raise unless the batch with id ``key`` (an input of a task) is held."""
        with self._lock:
            sent = self._batches.get(key)
            if sent is None or sent.future is None:
                raise ExecutorError(
                    f"A value this task needs (batch {key!r}) is no longer held by the dask "
                    f"executor: it belongs to an earlier run or the executor was shut down. "
                    f"Run the plan again.",
                    executor=self.name,
                )

    # --- completions --------------------------------------------------------------------------
    def _claim(self, sent: Sent) -> bool:
        with self._lock:
            if sent.reported:
                return False
            sent.reported = True
            return True

    def _on_summary(self, sent: Sent, dask_key: str, fut: Future) -> None:
        if sent.dask_key != dask_key:
            return  # an earlier incarnation of a batch that was sent again
        try:
            status = fut.status
            if status == "finished":
                try:
                    summaries: list[TaskResult] = fut.result()
                except Exception as exc:  # lost, recomputed and failed since the status read
                    self._on_error(sent, exc, exc.__traceback__)
                else:
                    if self._claim(sent):
                        self._report(sent, summaries)
            elif status == "error":
                self._on_error(sent, fut.exception(), fut.traceback())
            elif status in ("lost", "pending"):  # its worker died before we read it: Dask
                fut.add_done_callback(  # recomputes it, so wait again
                    lambda again: self._on_summary(sent, dask_key, again)
                )
                return
            elif self._claim(sent):
                error = ExecutorError(
                    f"Step {sent.name!r} was cancelled on the Dask cluster (future "
                    f"status {status!r}) before it reported a result.",
                    executor=self.name,
                    step=sent.name,
                )
                self._report_failure(sent, error, None)
        except BaseException as exc:  # a lost connection while fetching the summary
            if self._claim(sent):
                self._report_failure(sent, exc, traceback.format_exc())
        sent.summary = None  # the summary is read: Dask may forget it

    def _report(self, sent: Sent, summaries: list[TaskResult]) -> None:
        for i, ((task, on_done), result) in enumerate(zip(sent.items, summaries, strict=True)):
            if result.ok:
                result.value = DaskRef(sent.id, i)
                with self._lock:
                    total, count = self._durations.get(task.step.qualified_name, (0.0, 0))
                    self._durations[task.step.qualified_name] = (
                        total + result.duration_s,
                        count + 1,
                    )
            else:
                result.value = None
            on_done(result)
        sent.release()

    def _on_error(self, sent: Sent, exc: BaseException | None, tb: Any) -> None:
        from distributed.scheduler import KilledWorker

        text = "".join(traceback.format_tb(tb)) if tb is not None else None
        if isinstance(exc, KilledWorker):
            if self._recover_killed(sent, exc):
                return
            exc, text = self._killed_error(sent, exc), None
        if self._claim(sent):
            self._report_failure(sent, exc, text)

    def _recover_killed(self, sent: Sent, exc: Any) -> bool:
        """Dask gave up on a task after worker deaths: find the culprit, resend the innocent.

        Dask blames every task *assigned* to a dying worker, started or not. A batch whose
        start was never announced is innocent: sent again. A started batch of several calls is
        split, one call per Dask task. An input lost with a worker whose recomputation was
        blamed is rebuilt, then the batch is sent again. Each at most ``_MAX_RESENDS`` times.
        """
        if str(exc.task).startswith(f"{sent.dask_key}-summary"):
            return self._resummarize(sent)  # only the tiny summary task was caught in it
        culprit = self._by_dask_key.get(str(exc.task))
        if culprit is not None and culprit is not sent:  # an input of ours was lost
            rebuilt = culprit.dask_key != str(exc.task)  # by another of its consumers
            if rebuilt or (culprit.reported and self._rebuild(culprit)):
                return self._resend(sent, split=False)
            return False
        if exc.task != sent.dask_key or sent.reported:
            return False
        if not sent.started:
            return self._resend(sent, split=False)
        if sent.size > 1:
            return self._resend(sent, split=True)
        if self._finished_in_this_run(sent.first):
            # it had finished: Dask was recomputing its lost value on workers another call
            # killed; sent again, the worker loads what it stored (``recover``)
            return self._resend(sent, split=False)
        return False

    def _finished_in_this_run(self, task: Task) -> bool:
        """Whether this run already stored ``task``'s output (its cache entry says so)."""
        store = self._store
        if store is None or not (task.cache_entry and task.store_value):
            return False
        try:
            entry = Cache(store).lookup(task.key)
        except Exception:
            return False
        return entry is not None and entry.run_id == task.run_id

    def _resummarize(self, sent: Sent) -> bool:
        if sent.requeues >= _MAX_RESENDS or sent.future is None or sent.reported:
            return False
        sent.requeues += 1
        dask_key = sent.dask_key
        sent.summary = self.client.submit(
            batch_summaries, sent.future, key=f"{dask_key}-summary-{sent.requeues}", pure=False
        )
        sent.summary.add_done_callback(lambda fut: self._on_summary(sent, dask_key, fut))
        return True

    def _resend(self, sent: Sent, *, split: bool) -> bool:
        if sent.requeues >= _MAX_RESENDS or not self._claim(sent):
            return False
        with self._lock:
            self._batches.pop(sent.id, None)
        groups = [[item] for item in sent.items] if split else [sent.items]
        for items in groups:
            self._send(items, requeues=sent.requeues + 1)
        return True

    def _rebuild(self, sent: Sent) -> bool:
        """Recompute a reported batch whose value Dask lost for good (same id, new Dask task)."""
        if sent.rebuilds >= _MAX_RESENDS:
            return False
        sent.rebuilds += 1
        for key in sent.deps:  # inputs that are lost for good too come first
            upstream = self._batches.get(key)
            future = upstream.future if upstream is not None else None
            lost = future is not None and future.status == "error"
            if upstream is not None and lost and not self._rebuild(upstream):
                return False
        try:
            self._submit(sent, summary=False)
        except Exception:
            return False
        return True

    def _killed_error(self, sent: Sent, exc: Any) -> ExecutorError:
        names = sent.names()
        allowed = getattr(exc, "allowed_failures", "?")
        culprit = self._by_dask_key.get(str(exc.task))
        if culprit is not None and culprit is not sent:
            upstream = culprit.names()
            message = (
                f"Step {names} could not run: an input it needs (from step {upstream}) was lost "
                f"with its Dask worker and recomputing it killed workers too often "
                f"(KilledWorker). Fix the upstream step or give the workers more memory."
            )
        elif not sent.started:
            message = (
                f"Step {names} could not run: the Dask workers it was sent to kept dying "
                f"before it started (KilledWorker, {sent.requeues + 1} times). Expected a "
                f"healthy cluster; check the workers' logs and memory."
            )
        else:
            message = (
                f"Step {names} kept killing its Dask worker process: the worker running it died "
                f"again and again and Dask gave up (KilledWorker; "
                f"distributed.scheduler.allowed-failures = {allowed}). Expected the step to "
                f"return or raise; it most likely crashes its process (native crash, out of "
                f"memory, os._exit). Fix the step, give the workers more memory, or run it with "
                f"executor='local' to debug it."
            )
        error = ExecutorError(message, executor=self.name, step=sent.name)
        error.__cause__ = exc
        return error

    def _report_failure(self, sent: Sent, exc: BaseException | None, tb: str | None) -> None:
        for task, on_done in sent.items:
            on_done(TaskResult(task.name, False, attempts=1, error=exc, traceback=tb))
        sent.release()

    def _fail_batch(self, sent: Sent, exc: BaseException, tb: str) -> None:
        if self._claim(sent):
            self._report_failure(sent, exc, tb)

    # --- timeouts -----------------------------------------------------------------------------
    def _on_started(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        key = msg.get("key") if isinstance(msg, dict) else None
        with self._lock:
            sent = self._by_dask_key.get(str(key))
            if sent is None or sent.dask_key != key:
                return
            sent.started = True
            if sent.limit is None or sent.deadline is not None or sent.reported:
                return
            sent.deadline = time.monotonic() + sent.limit
            if self._watch is None or not self._watch.is_alive():
                self._watch = threading.Thread(
                    target=self._watchdog, name="mlflowkit-dask-timeouts", daemon=True
                )
                self._watch.start()
        self._watch_wake.set()

    def _watchdog(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                armed = [s for s in self._batches.values() if s.deadline and not s.reported]
            now = time.monotonic()
            for sent in armed:
                if sent.deadline is not None and sent.deadline <= now:
                    self._expire(sent)
            pending = [s.deadline - now for s in armed if s.deadline and s.deadline > now]
            if not pending:
                with self._lock:
                    if not any(s.limit and not s.reported for s in self._batches.values()):
                        self._watch = None
                        return
            self._watch_wake.wait(min([*pending, 0.5]))
            self._watch_wake.clear()

    def _expire(self, sent: Sent) -> None:
        if not self._claim(sent):
            return
        futures = [f for f in (sent.future, sent.summary) if f is not None]
        if futures and self._client is not None:
            self._client.cancel(futures)
        error = timeout_error(
            sent.name,
            sent.limit or 0.0,
            self.name,
            "its Dask task was cancelled; the worker thread runs the function to its end and "
            "the result is discarded",
        )
        self._report_failure(sent, error, None)

    def finish(self, *, interrupted: bool = False) -> None:
        """The run's values stay on the workers until the next ``start`` (``fetch`` can still
        bring one back). When interrupted: drop the buffered tasks and cancel the run's Dask
        tasks; a function already running on a worker ends on its own (Dask cannot stop it),
        and its result is dropped."""
        if not interrupted:
            return
        with self._lock:
            self._pending = []
            batches = [sent for sent in self._batches.values() if not sent.reported]
        futures = [f for sent in batches for f in (sent.future, sent.summary) if f is not None]
        if futures and self._client is not None:
            self._client.cancel(futures)

    # --- values and shutdown ------------------------------------------------------------------
    def fetch(self, handle: Any) -> Any:
        """Bring a value into this process (a ``DaskRef`` is gathered from its worker)."""
        if isinstance(handle, DaskRef):
            sent = self._batches.get(handle.key)
            if sent is None or sent.future is None:
                raise ExecutorError(
                    f"The dask executor no longer holds the value {handle!r}; load it from the "
                    f"store by its digest instead.",
                    executor=self.name,
                )
            return self.client.submit(batch_item, sent.future, handle.index, pure=False).result()
        if isinstance(handle, (Stored, Derived)):
            import cloudpickle

            from mlflowkit.stepcall import local_resolver

            store = cloudpickle.loads(self._store_blob) if self._store_blob else None
            return local_resolver(store)(handle)
        if isinstance(handle, InMemory):
            return handle.value
        raise TypeError(f"{type(self).__name__} cannot fetch {handle!r}")

    def describe(self) -> str:
        if self.address is not None:
            return f"dask ({self.address})"
        return f"dask (local cluster, {self.n_workers}x{self.threads_per_worker} threads)"

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            batches = list(self._batches.values())
            self._batches.clear()
            self._by_dask_key.clear()
            pending, self._pending = self._pending, []
        self._watch_wake.set()
        for sent in batches:
            if self._claim(sent):
                self._report_failure(sent, _stopped(sent.items[0][0]), None)
        for task, on_done in pending:
            on_done(TaskResult(task.name, False, attempts=0, error=_stopped(task)))
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            try:
                client.unsubscribe_topic(STARTED_TOPIC)
            finally:
                client.close()
        if cluster is not None:
            cluster.close()


def _stopped(task: Task) -> ExecutorError:
    return ExecutorError(
        f"Step {task.name!r} did not finish: the dask executor was shut down first.",
        executor="dask",
        step=task.name,
    )
