"""The worker process of the ``processes`` executor, and the framing both sides speak.

A worker is started as ``python -c "...; main()" <read fd> <write fd> <mlflowkit's folder>``
with two pipes that are private to it and the driver; the user's code keeps the ordinary
standard output and error.

Protocol (each message is a list of frames; a frame is one ``Connection.send_bytes``)::

    frames  = [sizes, header, body, *body buffers]
    sizes   = u32 count of the frames that follow, then one u64 size per frame
    header  = pickle of a small tuple: ("init", sys_path) | ("batch", batch_id, store blob or
              None, shared) | ("ready", pid) | ("results", batch_id, first, counts, rows)
    body    = cloudpickle (protocol 5) of the batch's tasks (as rows of their fields), or of
              the results: first the frames (``rows`` of them) of one pickle holding the rows
              of the small successful results, then each other result pickled on its own
              (``counts``: -1 for a result among the rows, else its number of frames); large
              contiguous buffers (NumPy arrays) travel out of band as frames of their own

Batches: the driver sends several small tasks in one message (one pickle, so a step shared by
the tasks is pickled once) and the worker answers with one message for all of them, or with a
few when the batch runs longer than ``FLUSH_S``: results are never held back for longer than
that behind later tasks. What the tasks of one reply write to the store is group-committed
(``store.batched()``): written, as one segment file, before they are answered. Before each
task the worker writes ``(batch_id, index)`` into a small shared *progress* map, so that when
it dies the driver knows which task it was running.

Invariants
----------
* A worker runs one task at a time, in its main thread, through ``stepcall.execute``, in the
  order of its batch; it answers every task of a batch with exactly one result, even when the
  batch could not be unpickled (then one result stands for all of them) or a step raised
  ``SystemExit``.
* The worker writes the output to the store itself when the task asks for it and the store is
  shared; a large output is then answered with a ``Stored`` handle (or a ``Derived`` one for
  cheap views of stored values), never copied back through the pipe.
* Buffers are received into ``bytearray``\\ s, so arrays arriving by value own writable memory
  (the step itself gets read-only views of its input arrays, as on every executor).
* The worker ignores SIGINT (the driver decides when it stops) and exits when its input pipe
  closes, so it never outlives the driver.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import struct
import sys
import time
import traceback
from dataclasses import fields
from itertools import chain
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Any

from mlflowkit.executors._remote import derivable, portable_error
from mlflowkit.executors.base import InMemory, Stored, Task, TaskResult

__all__ = [
    "FLUSH_S",
    "INLINE_MAX_BYTES",
    "PROGRESS",
    "answer",
    "decode",
    "dumps_body",
    "dumps_tasks",
    "encode",
    "loads_tasks",
    "main",
    "pack_answers",
    "recv",
    "result_of",
    "run_task",
    "send",
]

#: Outputs larger than this (pickled) are answered by handle when a handle can stand for them.
INLINE_MAX_BYTES = 256 * 1024
#: A batch still running after this many seconds sends the results it has so far.
FLUSH_S = 0.002
#: The progress map: the batch id and the index of the task the worker is running.
PROGRESS = struct.Struct("<qq")

_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")

Frame = bytes | bytearray | memoryview

_MAIN = b"__main__"
_MP_MAIN = b"__mp_main__"
_task_row = attrgetter(*(f.name for f in fields(Task)))
_result_row = attrgetter(*(f.name for f in fields(TaskResult)))
# outputs of these types are small enough to travel by value without measuring them first
_SMALL = (type(None), bool, float, complex)
_SMALL_BYTES = 4096


def dumps_body(obj: Any) -> list[Frame]:
    """Pickle ``obj`` (protocol 5) into a body frame plus out-of-band buffers.

    The standard pickler comes first: cloudpickle pickles what it can reach through a
    ``reducer_override`` and a ``ChainMap`` dispatch table, both Python code run for every
    object (about 3 µs each), while the standard one runs in C. Its pickle is kept only when it
    is what cloudpickle would have made: nothing in it refers to ``__main__`` (whose functions
    and classes cloudpickle ships by value) and no module is registered to be pickled by value.
    Anything else the standard pickler cannot do (lambdas, local functions and classes,
    classes cloudpickle rebuilt in this process) makes it fail, and cloudpickle does it.
    """
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            main_frame = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        except Exception:
            pass
        else:
            if _MAIN not in main_frame and _MP_MAIN not in main_frame:
                return [main_frame, *(b.raw() for b in buffers)]
        buffers.clear()
    main_frame = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [main_frame, *(b.raw() for b in buffers)]


def loads_body(frames: list[Frame]) -> Any:
    """Rebuild what ``dumps_body`` pickled."""
    return pickle.loads(frames[0], buffers=frames[1:])


def dumps_tasks(tasks: list[Task]) -> list[Frame]:
    """Pickle a batch of tasks as rows of their fields (a dataclass with slots pickles through
    Python-level methods, ten times slower than a tuple)."""
    return dumps_body([_task_row(task) for task in tasks])


def loads_tasks(frames: list[Frame]) -> list[Task]:
    """Rebuild what ``dumps_tasks`` pickled."""
    return [Task(*row) for row in loads_body(frames)]


def result_of(row: tuple[Any, ...]) -> TaskResult:
    """Rebuild a result sent as a row of its fields (see ``_Worker.reply``)."""
    return TaskResult(*row)


def encode(header: tuple[Any, ...], body: list[Frame] | None = None) -> list[Frame]:
    """A message: the pickled header, then the body frames."""
    return [pickle.dumps(header, protocol=5), *(body or [])]


def decode(frames: list[Frame]) -> tuple[tuple[Any, ...], list[Frame]]:
    """Split a message into its header and its body frames."""
    header: tuple[Any, ...] = pickle.loads(frames[0])
    return header, frames[1:]


def nbytes(frames: list[Frame]) -> int:
    """Total size of a message's frames."""
    return sum(memoryview(f).nbytes for f in frames)


def send(conn: Connection, frames: list[Frame]) -> None:
    """Send one message (see the module docstring for the layout)."""
    sizes = b"".join(_SIZE.pack(memoryview(f).nbytes) for f in frames)
    conn.send_bytes(_COUNT.pack(len(frames)) + sizes)
    for frame in frames:
        conn.send_bytes(frame)


def recv(conn: Connection) -> list[Frame]:
    """Receive one message; buffers land in writable ``bytearray``\\ s."""
    head = conn.recv_bytes()
    (count,) = _COUNT.unpack_from(head)
    sizes = [_SIZE.unpack_from(head, _COUNT.size + i * _SIZE.size)[0] for i in range(count)]
    frames: list[Frame] = []
    for i, size in enumerate(sizes):
        if i < 2 or size == 0:  # header and pickle body: small, read-only is fine
            frames.append(conn.recv_bytes())
        else:
            buf = bytearray(size)
            conn.recv_bytes_into(buf)
            frames.append(buf)
    return frames


# ---------------------------------------------------------------------------------------------
# the worker side
# ---------------------------------------------------------------------------------------------
#: a small result, or one pickled on its own
Answer = tuple[Task, TaskResult] | list[Frame]


class _Worker:
    def __init__(self, rx: Connection, tx: Connection, progress: mmap.mmap) -> None:
        self.rx = rx
        self.tx = tx
        self.progress = progress
        self.store_blob: bytes | None = None
        self.store: Any = None
        self.shared = False

    def open_store(self, blob: bytes | None) -> Any:
        if blob is not None and blob != self.store_blob:
            import cloudpickle

            self.store = cloudpickle.loads(blob)
            self.store_blob = blob
        return self.store

    def serve(self) -> None:
        while True:
            try:
                frames = recv(self.rx)
            except (EOFError, OSError):
                return
            header, body = decode(frames)
            if header[0] != "batch":
                continue
            _, batch_id, blob, shared = header
            self.shared = shared
            self.run(batch_id, body, blob, shared)

    def run(self, batch_id: int, body: list[Frame], blob: bytes | None, shared: bool) -> None:
        """Run a batch's tasks in order and send their results (see ``FLUSH_S``)."""
        PROGRESS.pack_into(self.progress, 0, batch_id, -1)
        try:
            tasks = loads_tasks(body)
            store = self.open_store(blob) if shared else None
        except BaseException as exc:  # the batch could not even be unpickled, or SystemExit
            result = TaskResult(
                "<unknown step>", False, attempts=1, error=exc, traceback=traceback.format_exc()
            )
            self.reply(batch_id, -1, [_encode_result(result)])
            return
        index = 0
        while index < len(tasks):  # one reply per FLUSH_S of work at most
            first, done, since = index, [], time.monotonic()
            # the store group-commits what these tasks write, before they are answered
            with store.batched() if store is not None else contextlib.nullcontext():
                while index < len(tasks):
                    PROGRESS.pack_into(self.progress, 0, batch_id, index)
                    done.append(run_task(tasks[index], store, shared))
                    index += 1
                    if time.monotonic() - since >= FLUSH_S:
                        break
            self.reply(batch_id, first, done)
        if not tasks:
            self.reply(batch_id, 0, [])

    def reply(self, batch_id: int, first: int, answers: list[Answer]) -> None:
        """Send the results of tasks ``first, first + 1, …`` of a batch (``first`` -1: all)."""
        counts, rows, frames = pack_answers(answers, self.shared)
        send(self.tx, encode(("results", batch_id, first, counts, rows), frames))


def pack_answers(answers: list[Answer], shared: bool) -> tuple[list[int], int, list[Frame]]:
    """The ``counts``, ``rows`` and body frames of a ``results`` message (see the protocol).

    Small successful results travel together, as rows of their fields in one pickle; the
    others were pickled on their own by ``answer``.
    """
    small = [a for a in answers if isinstance(a, tuple)]
    rows: list[Frame] = []
    if small:
        try:
            rows = dumps_body([_result_row(result) for _, result in small])
        except Exception:  # e.g. metrics that cannot be pickled: each on its own then
            answers = [answer(*a, shared) if isinstance(a, tuple) else a for a in answers]
    counts = [-1 if isinstance(a, tuple) else len(a) for a in answers]
    parts = [a for a in answers if not isinstance(a, tuple)]
    return counts, len(rows), [*rows, *chain(*parts)]


def run_task(task: Task, store: Any, shared: bool) -> Answer:
    """Run ``task`` and answer it: a small result as is, any other pickled (``answer``)."""
    result = _execute(task, store)
    return (task, result) if _small(result) else answer(task, result, shared)


def _execute(task: Task, store: Any) -> TaskResult:
    from mlflowkit.stepcall import execute, local_resolver

    try:
        return execute(task, store, local_resolver(store), keep_value=True)
    except BaseException as exc:  # SystemExit / KeyboardInterrupt raised by the step itself
        return TaskResult(task.name, False, attempts=1, error=exc, traceback=traceback.format_exc())


def _small(result: TaskResult) -> bool:
    """Whether ``result`` succeeded with an output too small to weigh before sending it."""
    if not result.ok:
        return False
    value = result.value
    if type(value) is not InMemory:
        return value is None or type(value) is Stored
    out = value.value
    kind = type(out)
    if kind in _SMALL:
        return True
    if kind is int:
        return bool(out.bit_length() <= 8 * _SMALL_BYTES)
    return kind in (str, bytes) and len(out) <= _SMALL_BYTES


def _encode_result(result: TaskResult) -> list[Frame]:
    result.error = portable_error(result.error)
    return dumps_body(result)


def answer(task: Task, result: TaskResult, shared: bool) -> list[Frame]:
    """Encode the result; a large output goes back as a handle where one can stand for it."""
    if not result.ok:
        return _encode_result(result)
    handle: Any = None
    if shared and task.store_value and result.output_digest is not None:
        handle = Stored(result.output_digest)
    elif shared and derivable(task):
        from mlflowkit.executors.base import Derived

        handle = Derived(task.step, task.args)
    try:
        frames = _encode_result(result)
    except Exception as exc:
        if handle is not None:
            result.value = handle
            return _encode_result(result)
        output_type = type(result.value.value) if isinstance(result.value, InMemory) else None
        result = TaskResult(
            task.name,
            False,
            attempts=result.attempts,
            duration_s=result.duration_s,
            started_at=result.started_at,
            traceback=traceback.format_exc(),
            error=TypeError(
                f"Step {task.name!r} returned a {getattr(output_type, '__qualname__', '?')} "
                f"that cannot be sent back from its worker process ({exc}). Return a "
                f"picklable value, keep the step's output stored (cache=True), or run it "
                f"with executor='threads'."
            ),
        )
        return _encode_result(result)
    if handle is not None and nbytes(frames) > INLINE_MAX_BYTES:
        result.value = handle
        return _encode_result(result)
    return frames


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process: ``main([read_fd, write_fd, progress_fd])``."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rx = Connection(int(args[0]), writable=False)
    tx = Connection(int(args[1]), readable=False)
    progress = mmap.mmap(int(args[2]), PROGRESS.size)
    try:
        header, _ = decode(recv(rx))
    except (EOFError, OSError):
        return
    if header[0] == "init":
        sys.path[:] = list(header[1])
    send(tx, encode(("ready", os.getpid())))
    _Worker(rx, tx, progress).serve()
