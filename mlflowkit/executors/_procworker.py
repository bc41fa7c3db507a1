"""The worker process of the ``processes`` executor, and the framing both sides speak.

A worker is started as ``python -c "...; main()" <read fd> <write fd> <mlflowkit's folder>``
with two pipes that are private to it and the driver; the user's code keeps the ordinary
standard output and error.

Protocol (each message is a list of frames; a frame is one ``Connection.send_bytes``)::

    frames  = [sizes, header, body, *body buffers]
    sizes   = u32 count of the frames that follow, then one u64 size per frame
    header  = pickle of a small tuple: ("init", sys_path) | ("task", job_id, store blob or None)
              | ("ready", pid) | ("result", job_id)
    body    = cloudpickle (protocol 5) of the task or the ``TaskResult``; large contiguous
              buffers (NumPy arrays) travel out of band as the frames after it, without a copy

Invariants
----------
* A worker runs one task at a time, in its main thread, through ``stepcall.execute``; it answers
  every task message with exactly one result message, even when the task could not be
  unpickled or the step raised ``SystemExit``.
* The worker writes the output to the store itself when the task asks for it and the store is
  shared; a large output is then answered with a ``Stored`` handle (or a ``Derived`` one for
  cheap views of stored values), never copied back through the pipe.
* Buffers are received into ``bytearray``\\ s, so arrays arriving by value own writable memory
  (the step itself gets read-only views of its input arrays, as on every executor).
* The worker ignores SIGINT (the driver decides when it stops) and exits when its input pipe
  closes, so it never outlives the driver.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from mlflowkit.executors._remote import derivable, portable_error
from mlflowkit.executors.base import InMemory, Stored, Task, TaskResult

__all__ = ["INLINE_MAX_BYTES", "decode", "dumps_body", "encode", "main", "recv", "send"]

#: Outputs larger than this (pickled) are answered by handle when a handle can stand for them.
INLINE_MAX_BYTES = 256 * 1024

_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")

Frame = bytes | bytearray | memoryview


def dumps_body(obj: Any) -> list[Frame]:
    """Pickle ``obj`` (cloudpickle, protocol 5) into a body frame plus out-of-band buffers."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    main_frame = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [main_frame, *(b.raw() for b in buffers)]


def loads_body(frames: list[Frame]) -> Any:
    """Rebuild what ``dumps_body`` pickled."""
    return pickle.loads(frames[0], buffers=frames[1:])


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
class _Worker:
    def __init__(self, rx: Connection, tx: Connection) -> None:
        self.rx = rx
        self.tx = tx
        self.store_blob: bytes | None = None
        self.store: Any = None

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
            if header[0] != "task":
                continue
            _, job_id, blob, shared = header
            reply = self.run(body, blob, shared)
            send(self.tx, encode(("result", job_id), reply))

    def run(self, body: list[Frame], blob: bytes | None, shared: bool) -> list[Frame]:
        name = "<unknown step>"
        try:
            task: Task = loads_body(body)
            name = task.name
            store = self.open_store(blob) if shared else None
            result = _execute(task, store)
        except BaseException as exc:  # the task could not even be unpickled, or SystemExit
            result = TaskResult(
                name, False, attempts=1, error=exc, traceback=traceback.format_exc()
            )
            return _encode_result(result)
        return _answer(task, result, shared)


def _execute(task: Task, store: Any) -> TaskResult:
    from mlflowkit.stepcall import execute, local_resolver

    try:
        return execute(task, store, local_resolver(store), keep_value=True)
    except BaseException as exc:  # SystemExit / KeyboardInterrupt raised by the step itself
        return TaskResult(task.name, False, attempts=1, error=exc, traceback=traceback.format_exc())


def _encode_result(result: TaskResult) -> list[Frame]:
    result.error = portable_error(result.error)
    return dumps_body(result)


def _answer(task: Task, result: TaskResult, shared: bool) -> list[Frame]:
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
    """Entry point of a worker process: ``main([read_fd, write_fd])``."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rx = Connection(int(args[0]), writable=False)
    tx = Connection(int(args[1]), readable=False)
    try:
        header, _ = decode(recv(rx))
    except (EOFError, OSError):
        return
    if header[0] == "init":
        sys.path[:] = list(header[1])
    send(tx, encode(("ready", os.getpid())))
    _Worker(rx, tx).serve()
