"""The pieces of the ``dask`` executor that do not need Dask itself.

Handles (``DaskRef``, ``Dep``), the per-batch result kept on a worker (``BatchOutput``), the
worker's store cache and same-run recovery, and the client's record of a batch (``Sent``).
Kept apart so that ``mlflowkit.executors.dask`` stays one readable module; nothing here
imports ``dask`` or ``distributed``.

Invariants
----------
* A ``DaskRef`` names a batch by its *id*, which never changes, not by its Dask key, which
  changes when a lost batch is rebuilt; handles held by the scheduler stay valid.
* ``recover`` only reuses outputs written *by the same run* (its cache entry's ``run_id``), so
  ``force=True`` and cache misses keep their meaning when Dask re-runs a batch.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflowkit.executors.base import Derived, InMemory, Input, Task, TaskResult

__all__ = [
    "BatchOutput",
    "DaskRef",
    "Dep",
    "Sent",
    "recover",
    "refs",
    "safe_name",
    "worker_store",
]

Future = Any  # a distributed.Future (distributed is only partly annotated)


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
    entry = store.get_cache(task.key)
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
    its current Dask task (a new one each time the batch is rebuilt after a loss).
    """

    __slots__ = (
        "dask_key",
        "deadline",
        "future",
        "id",
        "items",
        "limit",
        "rebuilds",
        "reported",
        "requeues",
        "started",
        "summary",
    )

    def __init__(
        self, items: list[tuple[Task, Callable[[TaskResult], None]]], requeues: int = 0
    ) -> None:
        self.id = uuid.uuid4().hex
        self.items = items
        self.requeues = requeues
        self.rebuilds = 0
        self.dask_key = ""
        self.future: Future | None = None
        self.summary: Future | None = None
        self.reported = False
        self.started = False
        self.limit: float | None = items[0][0].step.hints.timeout
        self.deadline: float | None = None

    @property
    def first(self) -> Task:
        return self.items[0][0]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)[:40] or "step"


def refs(template: Any) -> list[DaskRef]:
    """The ``DaskRef`` handles inside a task's argument template (also inside ``Derived``)."""
    found: list[DaskRef] = []
    stack = [template]
    while stack:
        item = stack.pop()
        if isinstance(item, Input):
            handle = item.handle
            if isinstance(handle, DaskRef):
                found.append(handle)
            elif isinstance(handle, Derived):
                stack.append(handle.args)
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return found
