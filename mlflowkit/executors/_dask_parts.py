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
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflowkit.cache import Cache
from mlflowkit.executors.base import InMemory, Input, Task, TaskResult

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


def pack(tasks: list[Task], check: Callable[[str], None]) -> tuple[bytes, tuple[str, ...]]:
    """The payload of a batch: ``tasks`` pickled (cloudpickle), with the ids of the batches
    they read, in the order of first use.

    Written as the worker reads it, without copying the arguments first: each ``DaskRef`` as a
    ``Dep`` (its batch's position in those ids, and its index), and each ``Input`` as its node
    and handle only -- its digest serves the driver (keys, lineage), never a worker, and is the
    bulk of a wide gather's payload, which Dask copies several times on its way. ``check(id)``
    is called once per batch read, and raises if its value is not held.
    """
    buffer = io.BytesIO()
    packer = _packer()(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    packer.check = check
    packer.dump(tasks)
    return buffer.getvalue(), tuple(packer.positions)


def shipped_input(node: str, position: int, index: int) -> Input:
    """An ``Input`` as ``pack`` writes one whose value is held on the workers."""
    return Input(node, "", Dep(position, index))


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
                if kind is DaskRef:
                    return (Dep, (self.position(obj.key), obj.index))
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
    tasks: list[Task] = pickle.loads(payload)
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
