"""The pieces of the ``dask`` executor that do not need Dask itself.

Handles (``DaskRef``, ``Dep``), a batch's payload (``pack``/``unpack``), the per-batch result
kept on a worker (``BatchOutput``), the worker's store cache and same-run recovery, the client's
record of a batch (``Sent``), and the check that a script starting a local cluster keeps its
run under ``if __name__ == "__main__":`` (``unguarded_main``).
Kept apart so that ``mlflowkit.executors.dask`` stays one readable module; nothing here
imports ``dask`` or ``distributed``.

Invariants
----------
* A ``DaskRef`` names a batch by its *id*, which never changes, not by its Dask key, which
  changes when a lost batch is rebuilt; handles held by the scheduler stay valid.
* ``recover`` only reuses outputs written *by the same run* (its cache entry's ``run_id``), so
  ``force=True`` and cache misses keep their meaning when Dask re-runs a batch.
* A payload names the batches it reads by their ids (``Sent.deps``, in the order their futures
  are passed to the Dask task), so it stays valid when one of them is rebuilt: a lost batch is
  rebuilt from its payload, without its tasks.
* Once a batch is reported, the client keeps what a rebuild and the error messages need (the
  payload, the ids it reads, a name, a size), not its tasks.
* A payload travels compressed (zlib, level 1) when that saves a quarter: the client keeps it
  for rebuilds and a scheduler in the client's process keeps the bytes it received, both for
  as long as the batch's outputs are held, so a wide fan-out's payloads are a large part of
  the driver's memory (a task of a mapped step is ~140 bytes pickled, ~55 compressed). Payloads
  under ``COMPRESS_AT_LEAST`` or over ``COMPRESS_AT_MOST`` bytes, and those whose first
  ``COMPRESS_SAMPLE`` bytes do not compress (large arrays inline), travel as pickled;
  ``unpack`` tells the two apart by their first byte.
"""

from __future__ import annotations

import ast
import copy
import io
import os
import pickle
import re
import sys
import threading
import time
import uuid
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflowkit.cache import Cache
from mlflowkit.executors.base import Derived, InMemory, Input, Task, TaskResult

__all__ = [
    "BatchOutput",
    "Buffer",
    "DaskRef",
    "Dep",
    "Sent",
    "pack",
    "recover",
    "safe_name",
    "shipped_input",
    "unguarded_main",
    "unpack",
    "worker_store",
]

Future = Any  # a distributed.Future (distributed is only partly annotated)
#: bytes, or a buffer over them (``bytes``, ``memoryview``, ``pickle.PickleBuffer``)
Buffer = Any


@dataclass(frozen=True, slots=True)
class DaskRef:
    """A value held on the Dask workers: item ``index`` of the batch with id ``key``."""

    key: str
    index: int


@dataclass(frozen=True, slots=True)
class Dep:
    """Inside a shipped template: item ``index`` of the ``position``-th dependency batch."""

    position: int
    index: int

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dep, (self.position, self.index))


#: payloads of this size or more are compressed when that saves a quarter; smaller ones hold
#: too little to matter (see the module docstring)
COMPRESS_AT_LEAST = 4 << 10
#: payloads over this size travel as pickled (large values inline)
COMPRESS_AT_MOST = 16 << 20
#: a larger payload is compressed only when its first this many bytes shrink by a quarter:
#: values that do not compress (arrays of floats) cost ~20 ms per MiB to try
COMPRESS_SAMPLE = 64 << 10
#: the first byte of a zlib stream (deflate, 32 KiB window); a pickle's is ``PROTO`` (0x80)
_ZLIB = b"\x78"
#: a list or tuple argument of at least this many inputs held on the workers (a fan-out's
#: gather) is written as one row of columns, not one pickled object per input
ROW_AT_LEAST = 64


def pack(tasks: list[Task], check: Callable[[str], None]) -> tuple[bytes, tuple[str, ...]]:
    """The payload of a batch: ``tasks`` pickled (cloudpickle), with the ids of the batches
    they read, in the order of first use.

    Written as the worker reads it, without copying the arguments first: each ``DaskRef`` as a
    ``Dep`` (its batch's position in those ids, and its index), and each ``Input`` as its node
    and handle only -- its digest serves the driver (keys, lineage), never a worker, and is the
    bulk of a wide gather's payload, which Dask copies several times on its way. A long list
    or tuple of such inputs (a gather) is written as an ``_InputRow``: three columns instead of
    an object, a tuple and a memo entry per input. ``check(id)`` is called once per batch
    read, and raises if its value is not held. The payload is compressed when that pays (see
    the module docstring).
    """
    buffer = io.BytesIO()
    packer = _packer()(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    packer.check = check
    packer.dump([_with_rows(task) for task in tasks])
    payload = buffer.getvalue()
    return _compressed(payload) or payload, tuple(packer.positions)


def _with_rows(task: Task) -> Task:
    """``task``, or a copy whose long sequences of held inputs are ``_InputRow`` objects."""
    args = _rowed(task.args)
    if args is None:
        return task
    shipped = copy.copy(task)
    shipped.args = args
    return shipped


def _rowed(args: dict[str, Any]) -> dict[str, Any] | None:
    """``args`` with its long sequences of held inputs as ``_InputRow`` objects, or None when
    it has none. Also a step's arguments (``Derived``) in a gather of a fan-out that was a
    cache hit."""
    rows: dict[str, Any] | None = None
    for pname, value in args.items():
        kind = type(value)
        if (
            (kind is tuple or kind is list)
            and len(value) >= ROW_AT_LEAST
            and all(type(x) is Input and type(x.handle) is DaskRef for x in value)
        ):
            if rows is None:
                rows = {}
            rows[pname] = _InputRow(value, kind is tuple)
    return None if rows is None else {**args, **rows}


def _compressed(payload: bytes) -> bytes | None:
    """``payload`` compressed, when it is worth it (see the module docstring); else None."""
    size = len(payload)
    if not COMPRESS_AT_LEAST <= size <= COMPRESS_AT_MOST:
        return None
    if size > COMPRESS_SAMPLE:
        sample = memoryview(payload)[:COMPRESS_SAMPLE]
        if len(zlib.compress(sample, 1)) > COMPRESS_SAMPLE * 3 // 4:
            return None
    packed = zlib.compress(payload, 1)
    return packed if len(packed) <= size * 3 // 4 else None


class _InputRow:
    """A sequence of inputs held on the workers, as ``pack`` writes it (only in ``pack``)."""

    __slots__ = ("inputs", "is_tuple")

    def __init__(self, inputs: tuple[Input, ...] | list[Input], is_tuple: bool) -> None:
        self.inputs = inputs
        self.is_tuple = is_tuple


def shipped_input(node: str, position: int, index: int) -> Input:
    """An ``Input`` as ``pack`` writes one whose value is held on the workers."""
    return Input(node, "", Dep(position, index))


def shipped_row(
    nodes: str, positions: bytes, indexes: bytes, is_tuple: bool
) -> tuple[Input, ...] | list[Input]:
    """The inputs of an ``_InputRow``: node names joined by NUL, two columns of ``int64``."""
    row = [
        Input(node, "", Dep(position, index))
        for node, position, index in zip(
            nodes.split("\0"), array("q", positions), array("q", indexes), strict=True
        )
    ]
    return tuple(row) if is_tuple else row


_PACKER: Any = None


def _packer() -> Any:
    """The pickler of ``pack`` (made once, on first use: cloudpickle is imported then)."""
    global _PACKER
    if _PACKER is None:
        import cloudpickle

        class Packer(cloudpickle.Pickler):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.positions: dict[str, int] = {}
                self.check: Callable[[str], None] = _no_check

            def reducer_override(self, obj: Any) -> Any:
                kind = type(obj)
                if kind is Input:
                    handle = obj.handle
                    if type(handle) is DaskRef:
                        position = self.position(handle.key)
                        return (shipped_input, (obj.node, position, handle.index))
                    return (Input, (obj.node, "", handle))
                if kind is Derived:  # e.g. a cached gather: its items are rows too
                    args = _rowed(obj.args)
                    if args is not None:
                        return (Derived, (obj.step, args))
                if kind is DaskRef:
                    return (Dep, (self.position(obj.key), obj.index))
                if kind is _InputRow:
                    inputs = obj.inputs
                    nodes = "\0".join([x.node for x in inputs])
                    if nodes.count("\0") != len(inputs) - 1:  # a name holds NUL: one by one
                        return (list if not obj.is_tuple else tuple, (list(inputs),))
                    positions = array("q", [self.position(x.handle.key) for x in inputs])
                    indexes = array("q", [x.handle.index for x in inputs])
                    return (
                        shipped_row,
                        (nodes, positions.tobytes(), indexes.tobytes(), obj.is_tuple),
                    )
                return super().reducer_override(obj)

            def position(self, key: str) -> int:
                position = self.positions.get(key)
                if position is None:
                    self.check(key)
                    position = self.positions[key] = len(self.positions)
                return position

        _PACKER = Packer
    return _PACKER


def _no_check(key: str) -> None:
    """Every batch is held."""


def unpack(payload: Buffer) -> list[Task]:
    """The tasks of a payload made by ``pack`` (its bytes, in any buffer: Dask passes them out
    of band)."""
    data = memoryview(payload)
    if data[:1] == _ZLIB:  # compressed by ``pack`` (a pickle starts with its PROTO opcode)
        data = memoryview(zlib.decompress(data))
    tasks: list[Task] = pickle.loads(data)
    return tasks


STORES: dict[bytes, Any] = {}
STORES_LOCK = threading.Lock()


class BatchOutput:
    """A batch's result on the worker: the output values and the summaries of its tasks."""

    __slots__ = ("summaries", "values")

    def __init__(self, values: list[Any], summaries: list[TaskResult]) -> None:
        self.values = values
        self.summaries = summaries

    def __reduce__(self) -> tuple[Any, ...]:
        return (BatchOutput, (self.values, self.summaries))


def worker_store(blob: bytes) -> Any:
    with STORES_LOCK:
        store = STORES.get(blob)
        if store is None:
            import cloudpickle

            if len(STORES) >= 8:
                STORES.clear()
            store = STORES[blob] = cloudpickle.loads(blob)
        return store


def recover(task: Task, store: Any) -> TaskResult | None:
    """This run already finished ``task`` (the batch is being re-run): load its output."""
    if not (task.cache_entry and task.store_value):
        return None
    entry = Cache(store).lookup(task.key)
    if entry is None or entry.run_id != task.run_id or not entry.stored:
        return None
    t0 = time.perf_counter()
    value = store.get(entry.output_digest)
    return TaskResult(
        task.name,
        True,
        output_digest=entry.output_digest,
        value=InMemory(value),
        attempts=1,
        duration_s=time.perf_counter() - t0,
        started_at=time.time(),
        meta=dict(entry.meta),
    )


class Sent:
    """A batch sent to Dask, as the client tracks it.

    ``id`` names the batch in ``DaskRef`` handles and never changes; ``dask_key`` is the key of
    its current Dask task (a new one each time the batch is rebuilt after a loss). ``items``
    (its tasks and their callbacks) is emptied once the batch is reported (``release``); a
    rebuild sends ``payload`` again, reading the batches ``deps`` name.
    """

    __slots__ = (
        "dask_key",
        "deadline",
        "deps",
        "future",
        "id",
        "items",
        "label",
        "limit",
        "name",
        "payload",
        "rebuilds",
        "reported",
        "requeues",
        "resources",
        "size",
        "started",
        "summary",
    )

    def __init__(
        self, items: list[tuple[Task, Callable[[TaskResult], None]]], requeues: int = 0
    ) -> None:
        first = items[0][0]
        self.id = uuid.uuid4().hex
        self.items = items
        self.size = len(items)
        self.name = first.name
        self.label = safe_name(first.name if len(items) == 1 else first.step.name)
        self.resources: dict[str, float] | None = dict(first.step.hints.resources) or None
        self.payload = b""
        self.deps: tuple[str, ...] = ()
        self.requeues = requeues
        self.rebuilds = 0
        self.dask_key = ""
        self.future: Future | None = None
        self.summary: Future | None = None
        self.reported = False
        self.started = False
        self.limit: float | None = first.step.hints.timeout
        self.deadline: float | None = None

    @property
    def first(self) -> Task:
        """The first task (while the batch is not reported)."""
        return self.items[0][0]

    def names(self) -> str:
        """The names of its calls, for a message (the first one and a count once released)."""
        if self.items:
            return ", ".join(repr(task.name) for task, _ in self.items)
        more = f" and {self.size - 1} more" if self.size > 1 else ""
        return f"{self.name!r}{more}"

    def release(self) -> None:
        """The batch is reported: its tasks and callbacks are not needed any more."""
        self.items = []


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)[:40] or "step"


def unguarded_main(start_method: str) -> str | None:
    """Where the script run as ``__main__`` starts work outside ``if __name__ == "__main__":``.

    Worker processes started by ``spawn`` or ``forkserver`` (Dask's nannies use ``spawn``)
    import the main script again, as ``__mp_main__``: a script that starts a run at its top
    level, outside that guard, would have every worker start it again (and fail, printing
    hundreds of lines). Returns ``"file:line"`` of the top-level statement of ``__main__`` that
    is running now when it is not under the guard, or when this very process is such a worker
    importing the script; None otherwise (the guard is there, ``fork`` is used, or ``__main__``
    is no script file: a notebook, ``python -c``, an interactive session).
    """
    if start_method == "fork":
        return None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not isinstance(path, str):
        return None
    namespace = vars(main)
    frame = sys._getframe(1)
    outer = None
    while frame is not None:  # the outermost frame running the script's top level
        if frame.f_globals is namespace and frame.f_code.co_name == "<module>":
            outer = frame
        frame = frame.f_back  # type: ignore[assignment]
    if outer is None:
        return None
    line = outer.f_lineno
    where = f"{os.path.basename(path)}:{line}"
    if namespace.get("__name__") == "__mp_main__":  # a worker importing the script again
        return where
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for statement in tree.body:
        end = statement.end_lineno or statement.lineno
        if statement.lineno <= line <= end:
            return None if _is_main_guard(statement) else where
    return None


def _is_main_guard(statement: ast.stmt) -> bool:
    """Whether ``statement`` is ``if __name__ == "__main__":`` (either way round, or within an
    ``and``)."""
    if not isinstance(statement, ast.If):
        return False
    names = {n.id for n in ast.walk(statement.test) if isinstance(n, ast.Name)}
    texts = {n.value for n in ast.walk(statement.test) if isinstance(n, ast.Constant)}
    return "__name__" in names and "__main__" in texts
