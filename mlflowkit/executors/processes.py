"""The ``processes`` executor: steps run in worker processes, reused across tasks and runs.

Invariants
----------
* Each task is reported through ``on_done`` exactly once, from the dispatcher thread (or from
  ``submit``/``flush`` themselves when the task cannot be sent).
* Worker processes are started on demand (at most ``max_workers``) and reused by every task of
  every run until ``shutdown()``. One background *dispatcher* thread owns them: it sends
  batches to workers, receives results, enforces timeouts and replaces workers that died or
  were stopped.
* ``submit`` only keeps the task; ``flush`` (the scheduler calls it before it waits) cuts what
  was kept into batches of one step's calls (``_batching``), pickles each batch once and wakes
  the dispatcher once. A worker holds at most ``_DEPTH`` batches: the one it runs and the next.
* A worker that dies fails only the task it was running (its progress map says which); the
  other tasks it held are sent again, to a new worker.
* Values: when the store can be reopened in a worker (it pickles as its URL and options, and
  is not ``memory://``), the worker reads its inputs from the store and writes its output there
  itself; a large output comes back as a ``Stored`` handle (a digest), never through the pipe.
  Small outputs come back by value too, to spare the next step a read. Otherwise (a
  process-private store) the driver resolves inputs before sending and writes outputs and
  cache entries when results arrive.

Timeouts: a task whose step has a ``timeout`` travels alone, to an idle worker that gets no
other batch meanwhile. One that runs past its ``timeout`` (counted from when its worker received
it, retries included) has its worker process killed and replaced, and fails with a
``TimeoutError`` naming the step and the limit. The wire protocol with the workers lives in
``_procworker``.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, Pipe, wait
from typing import TYPE_CHECKING, Any

import mlflowkit.executors._procworker as proto
from mlflowkit.errors import ExecutorError
from mlflowkit.executors._batching import Durations, cut
from mlflowkit.executors._remote import store_is_shareable, timeout_error
from mlflowkit.executors.base import Capabilities, Executor, InMemory, Input, Task, TaskResult
from mlflowkit.executors.limits import check_max_workers, refuse_gpu
from mlflowkit.stepcall import local_resolver, write_output

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["ProcessExecutor"]


# The worker finds mlflowkit where the driver did (appended: never shadows anything), then
# takes the driver's whole sys.path from its first message.
_WORKER_CODE = (
    "import sys; sys.path.append(sys.argv[4]); "
    "from mlflowkit.executors._procworker import main; main()"
)
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Batches in flight per worker: the one it runs and the next, so it never waits for a round trip
_DEPTH = 2


class _Job:
    """One task waiting for its result; ``shipped`` is what travels (inputs made local for a
    process-private store)."""

    __slots__ = ("done", "on_done", "shipped", "task")

    def __init__(self, task: Task, shipped: Task, on_done: Callable[[TaskResult], None]) -> None:
        self.task = task
        self.shipped = shipped
        self.on_done = on_done
        self.done = False


class _Batch:
    """Tasks of one step sent to a worker in one message; their results come back in order."""

    __slots__ = ("body", "deadline", "id", "jobs", "reported", "timed")

    def __init__(self, batch_id: int, jobs: list[_Job], body: list[proto.Frame]) -> None:
        self.id = batch_id
        self.jobs = jobs
        self.body = body
        self.reported = 0  # results received so far (the first ones: they come in order)
        self.timed = jobs[0].task.step.hints.timeout is not None  # then it is alone
        self.deadline: float | None = None


def _pack(batch_id: int, jobs: list[_Job]) -> _Batch:
    """Pickle the tasks of ``jobs`` into one batch (raises what pickling raises)."""
    return _Batch(batch_id, jobs, proto.dumps_tasks([job.shipped for job in jobs]))


class _Proc:
    """One worker process, the driver's ends of its two pipes, and its progress map."""

    __slots__ = ("batches", "popen", "progress", "ready", "rx", "store_token", "tx")

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        rx: Connection,
        tx: Connection,
        progress: mmap.mmap,
    ) -> None:
        self.popen = popen
        self.rx = rx
        self.tx = tx
        self.progress = progress
        self.ready = False
        #: batches sent and not fully answered, oldest first (at most ``_DEPTH``)
        self.batches: deque[_Batch] = deque()
        self.store_token = -1

    @property
    def busy(self) -> bool:
        """Whether the worker has tasks to run or running."""
        return bool(self.batches)

    def close(self, *, kill: bool) -> int | None:
        """Stop the process (politely unless ``kill``) and return its exit code."""
        for conn in (self.tx, self.rx):
            with contextlib.suppress(OSError):
                conn.close()
        if kill:
            self.popen.kill()
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()
        finally:
            with contextlib.suppress(BufferError, ValueError):
                self.progress.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Pool:
    """Worker processes and the dispatcher thread that drives them."""

    def __init__(self, max_workers: int, executor: str) -> None:
        self.max_workers = max_workers
        self.executor = executor
        self.procs: list[_Proc] = []
        self.pending: deque[_Batch] = deque()
        self.lock = threading.Lock()
        self.closing = False
        self.store_blob: bytes | None = None
        self.shared = False
        self.store_token = 0
        self.store: ArtifactStore | None = None
        self.startup_failures = 0
        self.fault: BaseException | None = None
        self.interrupted = False
        self.durations = Durations()
        self.batch_ids = itertools.count()
        self._wake_rx, self._wake_tx = Pipe(duplex=False)
        self._thread = threading.Thread(
            target=self._loop, name=f"mlflowkit-{executor}-dispatcher", daemon=True
        )
        self._thread.start()

    # --- called from other threads ---------------------------------------------------------
    def set_store(self, store: ArtifactStore | None) -> None:
        blob = store_is_shareable(store)
        with self.lock:
            self.store = store
            self.shared = blob is not None
            if blob != self.store_blob:
                self.store_blob = blob
                self.store_token += 1

    def put(self, batches: list[_Batch]) -> None:
        """Queue ``batches`` for the workers (one wake-up of the dispatcher for all)."""
        with self.lock:
            alive = self._thread.is_alive() and not self.closing
            if alive:
                self.pending.extend(batches)
        if not alive:
            for batch in batches:
                for job in batch.jobs:
                    self._finish(job, _stopped(job.task, self.executor))
            return
        self._wake()

    def interrupt(self) -> None:
        """Drop the tasks waiting for a worker; the dispatcher kills the workers running one."""
        with self.lock:
            self.interrupted = True
            batches = list(self.pending)
            self.pending.clear()
        for batch in batches:  # nobody listens for their results any more
            _drop(batch)
        self._wake()

    def close(self) -> None:
        with self.lock:
            self.closing = True
        self._wake()
        self._thread.join()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a closed dispatcher has nothing left to wake
            self._wake_tx.send_bytes(b"w")

    # --- the dispatcher thread --------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug here must not leave steps waiting forever
            self.fault = exc
            raise
        finally:
            self._stop_all()

    def _serve(self) -> None:
        while True:
            while self._wake_rx.poll():
                self._wake_rx.recv_bytes()
            with self.lock:
                interrupted, self.interrupted = self.interrupted, False
                closing = self.closing
            if interrupted:
                self._kill_busy()
            if closing:
                return
            self._dispatch()
            waitables: list[Any] = [self._wake_rx, *(p.rx for p in self.procs)]
            ready = wait(waitables, self._next_timeout())
            for conn in ready:
                proc = next((p for p in self.procs if p.rx is conn), None)
                if proc is not None:
                    self._receive(proc)
            self._expire()

    def _kill_busy(self) -> None:
        """The run was interrupted: kill the workers running its steps (not waited for)."""
        for proc in list(self.procs):
            if proc.batches:
                self.procs.remove(proc)
                for batch in proc.batches:  # nobody listens for their results any more
                    _drop(batch)
                proc.batches.clear()
                proc.close(kill=True)

    def _spawn(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        to_driver_r, to_driver_w = os.pipe()
        progress_fd, progress_path = tempfile.mkstemp(prefix="mlflowkit-progress-")
        try:
            os.unlink(progress_path)
            os.ftruncate(progress_fd, proto.PROGRESS.size)
            progress = mmap.mmap(progress_fd, proto.PROGRESS.size)
            proto.PROGRESS.pack_into(progress, 0, -1, -1)
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER_CODE,
                    str(to_worker_r),
                    str(to_driver_w),
                    str(progress_fd),
                    _PACKAGE_PARENT,
                ],
                pass_fds=(to_worker_r, to_driver_w, progress_fd),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_worker_r)
            os.close(to_driver_w)
            os.close(progress_fd)
        proc = _Proc(
            popen,
            Connection(to_driver_r, writable=False),
            Connection(to_worker_w, readable=False),
            progress,
        )
        self.procs.append(proc)
        try:
            proto.send(proc.tx, proto.encode(("init", list(sys.path))))
        except OSError:
            self._died(proc)

    def _dispatch(self) -> None:
        with self.lock:
            if not self.pending:
                return
            waiting = len(self.pending)
        starting = sum(1 for p in self.procs if not p.ready)
        idle = sum(1 for p in self.procs if p.ready and not p.batches)
        for _ in range(min(waiting - idle - starting, self.max_workers - len(self.procs))):
            self._spawn()
        # idle workers first, then a second batch to each busy one (so that it never waits
        # for the round trip); a batch with a deadline goes only to an idle worker, alone
        for depth in range(_DEPTH):
            for proc in list(self.procs):
                if not proc.ready or len(proc.batches) != depth:
                    continue
                if proc.batches and proc.batches[0].timed:
                    continue
                batch = self._take(untimed=depth > 0)
                if batch is None:
                    if depth == 0:
                        return
                    break
                self._send(proc, batch)

    def _take(self, *, untimed: bool) -> _Batch | None:
        """The next pending batch (with ``untimed``: the next without a deadline), or None."""
        with self.lock:
            pending = self.pending
            if not pending:
                return None
            if not untimed or not pending[0].timed:
                return pending.popleft()
            for i, batch in enumerate(pending):
                if not batch.timed:
                    del pending[i]
                    return batch
        return None

    def _send(self, proc: _Proc, batch: _Batch) -> None:
        with self.lock:
            fresh = proc.store_token != self.store_token
            blob = self.store_blob if fresh else None
            shared = self.shared
            token = self.store_token
        timeout = batch.jobs[0].task.step.hints.timeout if batch.timed else None
        proc.batches.append(batch)
        batch.deadline = None if timeout is None else time.monotonic() + timeout
        try:
            proto.send(proc.tx, proto.encode(("batch", batch.id, blob, shared), batch.body))
        except OSError:  # the worker died before it got the batch: give it to another
            proc.batches.pop()
            with self.lock:
                self.pending.appendleft(batch)
            self._died(proc)
            return
        proc.store_token = token

    def _receive(self, proc: _Proc) -> None:
        try:
            frames = proto.recv(proc.rx)
        except (EOFError, OSError):
            self._died(proc)
            return
        header, body = proto.decode(frames)
        if header[0] == "ready":
            proc.ready = True
            self.startup_failures = 0
            return
        if header[0] != "results" or not proc.batches or proc.batches[0].id != header[1]:
            return
        batch = proc.batches[0]
        _, _, first, counts, rows = header
        if first < 0:  # the batch could not be unpickled: one result stands for all
            whole = self._load(batch.jobs[0], body)
            for job in batch.jobs:
                self._finish(
                    job,
                    TaskResult(
                        job.task.name,
                        False,
                        attempts=whole.attempts,
                        error=whole.error,
                        traceback=whole.traceback,
                    ),
                )
            batch.reported = len(batch.jobs)
        else:
            self._results(batch.jobs[first : first + len(counts)], counts, body[:rows], body[rows:])
            batch.reported = first + len(counts)
        if batch.reported >= len(batch.jobs):
            proc.batches.popleft()

    def _results(
        self,
        jobs: list[_Job],
        counts: list[int],
        rows_body: list[proto.Frame],
        parts: list[proto.Frame],
    ) -> None:
        """Report the results of ``jobs`` (see the protocol in ``_procworker``)."""
        rows: list[Any] = []
        rows_error: Exception | None = None
        if rows_body:
            try:
                rows = proto.loads_body(rows_body)
            except Exception as exc:
                rows_error = exc
        at = row = ran = 0
        took = 0.0
        for job, count in zip(jobs, counts, strict=True):
            if count >= 0:
                result = self._load(job, parts[at : at + count])
                at += count
            elif rows_error is None:
                result = proto.result_of(rows[row])
                row += 1
            else:
                result = self._unloadable(job, rows_error)
            if result.ok:
                ran += 1
                took += result.duration_s
                if not self.shared:
                    result = self._write_here(job.task, result)
            self._finish(job, result)
        if ran:  # a batch holds calls of one step
            self.durations.add(jobs[0].task.step.qualified_name, took / ran)

    def _load(self, job: _Job, frames: list[proto.Frame]) -> TaskResult:
        try:
            result: TaskResult = proto.loads_body(frames)
        except Exception as exc:
            return self._unloadable(job, exc)
        return result

    def _unloadable(self, job: _Job, exc: Exception) -> TaskResult:
        return _failed(
            job.task,
            ExecutorError(
                f"The result of step {job.task.name!r} could not be unpickled in the driver "
                f"process: {exc}. Make sure the modules it needs are importable here too.",
                executor=self.executor,
                step=job.task.name,
            ),
            attempts=1,
        )

    def _write_here(self, task: Task, result: TaskResult) -> TaskResult:
        """A process-private store: write the output and cache entry from the driver."""
        store = self.store
        if store is None or not isinstance(result.value, InMemory) or not result.output_digest:
            return result
        try:
            write_output(task, store, result.value.value, result.output_digest, result.meta)
        except Exception as exc:
            return TaskResult(
                task.name,
                False,
                attempts=result.attempts,
                duration_s=result.duration_s,
                started_at=result.started_at,
                error=exc,
                traceback=traceback.format_exc(),
            )
        return result

    def _died(self, proc: _Proc) -> None:
        """``proc`` ended: fail the task it was running, give its other tasks to the others."""
        if proc in self.procs:
            self.procs.remove(proc)
        batch_id, index = proto.PROGRESS.unpack_from(proc.progress)
        code = proc.close(kill=True)
        batches = list(proc.batches)
        proc.batches.clear()
        if not batches:
            if not proc.ready:
                self._startup_failed(code)
            return
        first = batches[0]
        unanswered = first.jobs[first.reported :]
        if batch_id != first.id:
            culprits = []  # it died before it took the batch: not the batch's doing
        elif index < 0:
            culprits = unanswered  # it died unpickling the batch
        elif index >= first.reported:
            culprits = [first.jobs[index]]  # the others ran before it or had not started
        else:
            culprits = []  # it died between two tasks, after sending results: not theirs
        again = [job for job in unanswered if job not in culprits]
        for job in culprits:
            self._finish(job, _failed(job.task, self._death_error(job, proc, code), attempts=1))
        for jobs in (again, *(b.jobs for b in batches[1:])):
            self._requeue([job for job in jobs if not job.done])

    def _requeue(self, jobs: list[_Job]) -> None:
        """Send ``jobs`` again, as a batch of their own, before the other pending batches."""
        if not jobs:
            return
        try:
            batch = _pack(next(self.batch_ids), jobs)
        except Exception as exc:  # they were pickled before: not expected
            for job in jobs:
                self._finish(job, _failed(job.task, exc))
            return
        with self.lock:
            self.pending.appendleft(batch)

    def _death_error(self, job: _Job, proc: _Proc, code: int | None) -> ExecutorError:
        name = job.task.name
        return ExecutorError(
            f"The worker process (pid {proc.popen.pid}) running step {name!r} died with "
            f"{_describe_exit(code)} before reporting a result. Expected the step to return "
            f"or raise; the process ended instead (a crash in native code, running out of "
            f"memory, or os._exit()). The pool started a new worker for the other steps; fix "
            f"the step, or run it with executor='local' to debug it.",
            executor=self.executor,
            step=name,
        )

    def _startup_failed(self, code: int | None) -> None:
        """A worker died before it was ready; after a few in a row, fail what is waiting."""
        self.startup_failures += 1
        if self.startup_failures < 3:
            return
        with self.lock:
            batches = list(self.pending)
            self.pending.clear()
        message = (
            f"Worker processes of the {self.executor!r} executor could not start: the last one "
            f"ended with {_describe_exit(code)} before it was ready (see its error output "
            f'above). Expected `{sys.executable} -c "import mlflowkit"` to work in this '
            f"environment; fix the environment or use executor='threads'."
        )
        for batch in batches:
            for job in batch.jobs:
                error = ExecutorError(message, executor=self.executor, step=job.task.name)
                self._finish(job, _failed(job.task, error))

    def _next_timeout(self) -> float | None:
        deadlines = [
            p.batches[0].deadline
            for p in self.procs
            if p.batches and p.batches[0].deadline is not None
        ]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for proc in list(self.procs):
            if not proc.batches:
                continue
            batch = proc.batches[0]
            if batch.deadline is None or batch.deadline > now:
                continue
            self.procs.remove(proc)
            proc.batches.clear()
            proc.close(kill=True)
            (job,) = batch.jobs  # a batch with a deadline is one task, alone on its worker
            limit = job.task.step.hints.timeout or 0.0
            self._finish(
                job,
                _failed(
                    job.task,
                    timeout_error(
                        job.task.name,
                        limit,
                        self.executor,
                        f"its worker process (pid {proc.popen.pid}) was killed and replaced",
                    ),
                    attempts=1,
                ),
            )

    def _finish(self, job: _Job, result: TaskResult) -> None:
        if job.done:
            return
        job.done = True
        job.shipped = job.task  # lets go of inputs loaded for it
        job.on_done(result)

    def _stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.tx.close()  # the worker reads EOF and exits
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            proc.close(kill=proc.popen.poll() is None)
            for batch in proc.batches:
                for job in batch.jobs:
                    self._finish(job, _stopped(job.task, self.executor))
            proc.batches.clear()
        self.procs.clear()
        with self.lock:
            batches = list(self.pending)
            self.pending.clear()
        for batch in batches:
            for job in batch.jobs:
                self._finish(job, _stopped(job.task, self.executor))
        self._wake_rx.close()
        self._wake_tx.close()


def _drop(batch: _Batch) -> None:
    """Forget ``batch``'s tasks without reporting them (nobody listens any more)."""
    for job in batch.jobs:
        job.done = True
        job.shipped = job.task  # lets go of inputs loaded for it
    batch.body = []


def _failed(task: Task, error: BaseException, attempts: int = 0) -> TaskResult:
    return TaskResult(task.name, False, attempts=attempts, error=error)


def _stopped(task: Task, executor: str) -> TaskResult:
    return _failed(
        task,
        ExecutorError(
            f"Step {task.name!r} did not run: the {executor!r} executor was shut down (or its "
            f"dispatcher stopped) first.",
            executor=executor,
            step=task.name,
        ),
    )


def _unsendable(
    task: Task, exc: BaseException | None, on_done: Callable[[TaskResult], None]
) -> None:
    """Report that ``task`` could not be sent to a worker (``exc`` says why)."""
    error = ExecutorError(
        f"Step {task.name!r} could not be sent to a worker process: {exc}. Expected "
        f"its function and inputs to be picklable (cloudpickle); pass picklable "
        f"values, or run it with executor='threads'.",
        executor="processes",
        step=task.name,
    )
    error.__cause__ = exc
    trace = "".join(traceback.format_exception(exc)) if exc is not None else None
    on_done(TaskResult(task.name, False, attempts=0, error=error, traceback=trace))


def _localize(template: Any, resolve: Callable[[Any], Any]) -> Any:
    """Replace every input handle by ``InMemory`` of its value (for process-private stores)."""
    if isinstance(template, Input):
        if isinstance(template.handle, InMemory):
            return template
        return Input(template.node, template.digest, InMemory(resolve(template.handle)))
    if type(template) in (list, tuple, set, frozenset):
        return type(template)(_localize(t, resolve) for t in template)
    if type(template) is dict:
        return {k: _localize(v, resolve) for k, v in template.items()}
    return template


class ProcessExecutor(Executor):
    """Run steps on a pool of worker processes, reused across the tasks of a run.

    Tasks travel with cloudpickle, so steps defined in ``__main__``, notebooks and test
    functions work. Timeouts are enforced by killing the worker (which is then replaced); a
    worker that dies fails the task it was running and is replaced too.

    Parameters
    ----------
    max_workers:
        Most worker processes at once (default: the number of CPUs). Workers start on demand.
    """

    name = "processes"
    capabilities = Capabilities(shares_memory=False, can_timeout=True, parallel=True)

    def __init__(self, max_workers: int | None = None) -> None:
        check_max_workers(max_workers, self.name, "the number of CPUs")
        if sys.platform == "win32":
            raise ExecutorError(
                "The 'processes' executor needs a POSIX system (Linux, macOS); on Windows use "
                "executor='threads' or 'dask'.",
                executor=self.name,
            )
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: _Pool | None = None
        self._finalizer: weakref.finalize[Any, Any] = weakref.finalize(self, lambda: None)
        self._store: ArtifactStore | None = None
        self._buffer: list[_Job] = []  # submitted, not flushed yet

    def start(self, store: ArtifactStore) -> None:
        self._store = store
        if self._pool is None:
            self._pool = _Pool(self.max_workers, self.name)
            # an executor dropped without shutdown() still stops its workers
            self._finalizer = weakref.finalize(self, self._pool.close)
        self._pool.set_store(store)

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        """Keep ``task`` for the next ``flush`` (which batches and sends what was kept)."""
        refuse_gpu(task, self.name)
        pool = self._pool
        if pool is None:
            raise ExecutorError(
                f"Step {task.name!r} was submitted to the 'processes' executor before start(): "
                f"expected start(store) first (plan.run calls it); call it, or run the plan "
                f"with this executor.",
                executor=self.name,
                step=task.name,
            )
        shipped = task
        if not pool.shared and self._store is not None:
            try:
                shipped = replace(task, args=_localize(task.args, local_resolver(self._store)))
            except Exception as exc:
                _unsendable(task, exc, on_done)
                return
        self._buffer.append(_Job(task, shipped, on_done))

    def flush(self) -> None:
        """Cut the tasks kept since the last flush into batches, pickle them, send them."""
        jobs, self._buffer = self._buffer, []
        pool = self._pool
        if not jobs or pool is None:
            return
        groups = cut(
            jobs,
            lambda job: job.task.step.qualified_name,
            lambda job: job.task.step.hints.timeout is not None,
            pool.durations,
            self.max_workers,
        )
        batches: list[_Batch] = []
        for group in groups:
            batch = self._pack(pool, group)
            if batch is not None:
                batches.append(batch)
        if batches:
            pool.put(batches)

    def _pack(self, pool: _Pool, jobs: list[_Job]) -> _Batch | None:
        """One batch of ``jobs``; those that cannot be pickled are reported and left out."""
        try:
            return _pack(next(pool.batch_ids), jobs)
        except Exception:
            if len(jobs) == 1:
                _unsendable(jobs[0].task, sys.exc_info()[1], jobs[0].on_done)
                return None
        sendable = []
        for job in jobs:  # find the ones that cannot be pickled
            try:
                proto.dumps_tasks([job.shipped])
            except Exception as exc:
                _unsendable(job.task, exc, job.on_done)
            else:
                sendable.append(job)
        return self._pack(pool, sendable) if sendable else None

    def finish(self, *, interrupted: bool = False) -> None:
        """When interrupted: drop the tasks waiting for a worker, kill the workers running one."""
        if interrupted:
            self._buffer = []
            if self._pool is not None:
                self._pool.interrupt()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for diagnostics and tests)."""
        pool = self._pool
        return [] if pool is None else [p.popen.pid for p in list(pool.procs)]

    def describe(self) -> str:
        return f"processes (up to {self.max_workers} workers)"

    def shutdown(self) -> None:
        jobs, self._buffer = self._buffer, []
        for job in jobs:  # submitted but never flushed (not a run's doing)
            job.on_done(_stopped(job.task, self.name))
        pool, self._pool = self._pool, None
        if pool is not None:
            self._finalizer.detach()
            pool.close()
