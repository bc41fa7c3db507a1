"""The ``processes`` executor: steps run in worker processes, reused across tasks and runs.

Invariants
----------
* Each task is reported through ``on_done`` exactly once, from the dispatcher thread (or from
  ``submit`` itself when the task cannot be sent).
* Worker processes are started on demand (at most ``max_workers``) and reused by every task of
  every run until ``shutdown()``. One background *dispatcher* thread owns them: it sends tasks
  to idle workers, receives results, enforces timeouts and replaces workers that died or were
  stopped. ``submit`` only pickles the task and queues it.
* Values: when the store can be reopened in a worker (it pickles as its URL and options, and
  is not ``memory://``), the worker reads its inputs from the store and writes its output there
  itself; a large output comes back as a ``Stored`` handle (a digest), never through the pipe.
  Small outputs come back by value too, to spare the next step a read. Otherwise (a
  process-private store) the driver resolves inputs before sending and writes outputs and
  cache entries when results arrive.

Timeouts: a task that runs past its step's ``timeout`` (counted from when its worker received
it, retries included) has its worker process killed and replaced, and fails with a
``TimeoutError`` naming the step and the limit. The wire protocol with the workers lives in
``_procworker``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
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
    "import sys; sys.path.append(sys.argv[3]); "
    "from mlflowkit.executors._procworker import main; main()"
)
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Job:
    __slots__ = ("body", "deadline", "done", "id", "on_done", "task")

    def __init__(
        self,
        job_id: int,
        task: Task,
        body: list[proto.Frame],
        on_done: Callable[[TaskResult], None],
    ) -> None:
        self.id = job_id
        self.task = task
        self.body = body
        self.on_done = on_done
        self.deadline: float | None = None
        self.done = False


class _Proc:
    """One worker process and the driver's ends of its two pipes."""

    __slots__ = ("job", "popen", "ready", "rx", "store_token", "tx")

    def __init__(self, popen: subprocess.Popen[bytes], rx: Connection, tx: Connection) -> None:
        self.popen = popen
        self.rx = rx
        self.tx = tx
        self.ready = False
        self.job: _Job | None = None
        self.store_token = -1

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
        self.pending: deque[_Job] = deque()
        self.lock = threading.Lock()
        self.closing = False
        self.store_blob: bytes | None = None
        self.shared = False
        self.store_token = 0
        self.store: ArtifactStore | None = None
        self.startup_failures = 0
        self.fault: BaseException | None = None
        self.interrupted = False
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

    def put(self, job: _Job) -> None:
        with self.lock:
            alive = self._thread.is_alive() and not self.closing
            if alive:
                self.pending.append(job)
        if not alive:
            self._finish(job, _stopped(job.task, self.executor))
            return
        self._wake()

    def interrupt(self) -> None:
        """Drop the jobs waiting for a worker; the dispatcher kills the workers running one."""
        with self.lock:
            self.interrupted = True
            jobs = list(self.pending)
            self.pending.clear()
        for job in jobs:  # nobody listens for their results any more
            job.done = True
            job.body = []
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
            job = proc.job
            if job is not None:
                self.procs.remove(proc)
                job.done = True  # nobody listens for its result any more
                proc.job = None
                proc.close(kill=True)

    def _spawn(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        to_driver_r, to_driver_w = os.pipe()
        try:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER_CODE,
                    str(to_worker_r),
                    str(to_driver_w),
                    _PACKAGE_PARENT,
                ],
                pass_fds=(to_worker_r, to_driver_w),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_worker_r)
            os.close(to_driver_w)
        proc = _Proc(
            popen, Connection(to_driver_r, writable=False), Connection(to_worker_w, readable=False)
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
        idle = [p for p in self.procs if p.ready and p.job is None]
        for _ in range(min(waiting - len(idle) - starting, self.max_workers - len(self.procs))):
            self._spawn()
        for proc in idle:
            with self.lock:
                if not self.pending:
                    return
                job = self.pending.popleft()
            self._send(proc, job)

    def _send(self, proc: _Proc, job: _Job) -> None:
        with self.lock:
            fresh = proc.store_token != self.store_token
            blob = self.store_blob if fresh else None
            shared = self.shared
            token = self.store_token
        timeout = job.task.step.hints.timeout
        proc.job = job
        job.deadline = None if timeout is None else time.monotonic() + timeout
        try:
            proto.send(proc.tx, proto.encode(("task", job.id, blob, shared), job.body))
        except OSError:  # the worker died before it got the task: give the task to another
            proc.job = None
            with self.lock:
                self.pending.appendleft(job)
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
        job = proc.job
        proc.job = None
        if job is None or header[1] != job.id:
            return
        try:
            result: TaskResult = proto.loads_body(body)
        except Exception as exc:
            result = _failed(
                job.task,
                ExecutorError(
                    f"The result of step {job.task.name!r} could not be unpickled in the driver "
                    f"process: {exc}. Make sure the modules it needs are importable here too.",
                    executor=self.executor,
                    step=job.task.name,
                ),
                attempts=1,
            )
        if result.ok and not self.shared:
            result = self._write_here(job.task, result)
        self._finish(job, result)

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
        if proc in self.procs:
            self.procs.remove(proc)
        code = proc.close(kill=True)
        job = proc.job
        proc.job = None
        if not proc.ready and job is None:
            self._startup_failed(code)
        if job is not None:
            self._finish(job, _failed(job.task, self._death_error(job, proc, code), attempts=1))

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
            jobs = list(self.pending)
            self.pending.clear()
        message = (
            f"Worker processes of the {self.executor!r} executor could not start: the last one "
            f"ended with {_describe_exit(code)} before it was ready (see its error output "
            f'above). Expected `{sys.executable} -c "import mlflowkit"` to work in this '
            f"environment; fix the environment or use executor='threads'."
        )
        for job in jobs:
            error = ExecutorError(message, executor=self.executor, step=job.task.name)
            self._finish(job, _failed(job.task, error))

    def _next_timeout(self) -> float | None:
        deadlines = [p.job.deadline for p in self.procs if p.job and p.job.deadline is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for proc in list(self.procs):
            job = proc.job
            if job is None or job.deadline is None or job.deadline > now:
                continue
            self.procs.remove(proc)
            proc.job = None
            proc.close(kill=True)
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
        job.body = []
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
            if proc.job is not None:
                self._finish(proc.job, _stopped(proc.job.task, self.executor))
        self.procs.clear()
        with self.lock:
            jobs = list(self.pending)
            self.pending.clear()
        for job in jobs:
            self._finish(job, _stopped(job.task, self.executor))
        self._wake_rx.close()
        self._wake_tx.close()


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
        self._ids = itertools.count()

    def start(self, store: ArtifactStore) -> None:
        self._store = store
        if self._pool is None:
            self._pool = _Pool(self.max_workers, self.name)
            # an executor dropped without shutdown() still stops its workers
            self._finalizer = weakref.finalize(self, self._pool.close)
        self._pool.set_store(store)

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
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
        try:
            shipped = task
            if not pool.shared and self._store is not None:
                shipped = replace(task, args=_localize(task.args, local_resolver(self._store)))
            body = proto.dumps_body(shipped)
        except Exception as exc:
            error = ExecutorError(
                f"Step {task.name!r} could not be sent to a worker process: {exc}. Expected "
                f"its function and inputs to be picklable (cloudpickle); pass picklable "
                f"values, or run it with executor='threads'.",
                executor=self.name,
                step=task.name,
            )
            error.__cause__ = exc
            on_done(
                TaskResult(
                    task.name, False, attempts=0, error=error, traceback=traceback.format_exc()
                )
            )
            return
        pool.put(_Job(next(self._ids), task, body, on_done))

    def finish(self, *, interrupted: bool = False) -> None:
        """When interrupted: drop the tasks waiting for a worker, kill the workers running one."""
        if interrupted and self._pool is not None:
            self._pool.interrupt()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for diagnostics and tests)."""
        pool = self._pool
        return [] if pool is None else [p.popen.pid for p in list(pool.procs)]

    def describe(self) -> str:
        return f"processes (up to {self.max_workers} workers)"

    def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            self._finalizer.detach()
            pool.close()
