"""The worker side of the ``dask`` executor: the functions it ships to Dask workers.

They are shipped by reference (``mlflowkit.executors._dask_worker.run_batch``) and run in Dask
worker threads; the client side is ``mlflowkit.executors.dask``, the parts that need neither
Dask nor a worker are in ``_dask_parts``.

Invariants
----------
* ``dask`` and ``distributed`` are imported inside the functions only, never at import.
* A batch announces its start to the client (event topic ``STARTED_TOPIC``) before it runs
  anything, synchronously: a timeout counts from then, and a batch that never started is not
  blamed for a worker's death.
* Every task of a batch gets a summary (a ``TaskResult`` without its value, with a portable
  error); the values stay on the worker, in the ``BatchOutput``.
"""

from __future__ import annotations

import traceback
from typing import Any

from mlflowkit.executors._dask_parts import (
    BatchOutput,
    Buffer,
    Dep,
    recover,
    unpack,
    worker_store,
)
from mlflowkit.executors._remote import portable_error
from mlflowkit.executors.base import Derived, TaskResult

__all__ = ["STARTED_TOPIC", "batch_item", "batch_summaries", "run_batch"]

STARTED_TOPIC = "mlflowkit-started"


def run_batch(key: str, payload: Buffer, store_blob: bytes, *deps: Any) -> BatchOutput:
    """Run a batch of independent tasks here, on a Dask worker; see the module docstring.

    It first tells the client, synchronously (through the scheduler), that the batch started:
    a timeout counts from then, and a batch that never started is not blamed for a worker's
    death.
    """
    import distributed

    from mlflowkit.stepcall import call_step, execute, local_resolver, resolve_template

    lib: Any = distributed  # only partly annotated
    lib.get_client().log_event(STARTED_TOPIC, {"key": key})
    _register_sizeof()
    tasks = unpack(payload)
    store = worker_store(store_blob)
    base = local_resolver(store)

    def resolve(handle: Any) -> Any:
        if isinstance(handle, Dep):
            return deps[handle.position].values[handle.index]
        if isinstance(handle, Derived):
            return call_step(handle.step, resolve_template(handle.args, resolve))
        return base(handle)

    values: list[Any] = []
    summaries: list[TaskResult] = []
    for task in tasks:
        try:
            result = recover(task, store) or execute(task, store, resolve, keep_value=True)
        except BaseException as exc:  # SystemExit raised by the step, or a store failure
            result = TaskResult(
                task.name, False, attempts=1, error=exc, traceback=traceback.format_exc()
            )
        values.append(result.value.value if result.ok and result.value is not None else None)
        result.value = None
        result.error = portable_error(result.error)
        summaries.append(result)
    return BatchOutput(values, summaries)


_SIZEOF_REGISTERED = False


def _register_sizeof() -> None:
    """Tell Dask how big a batch's values are (it places consumers near big data)."""
    global _SIZEOF_REGISTERED
    if _SIZEOF_REGISTERED:
        return
    import dask.sizeof

    sizeof: Any = dask.sizeof.sizeof  # only partly annotated

    def _batch_size(batch: BatchOutput) -> int:
        return 64 + sum(int(sizeof(v)) for v in batch.values)

    sizeof.register(BatchOutput)(_batch_size)

    _SIZEOF_REGISTERED = True


def batch_summaries(batch: BatchOutput) -> list[TaskResult]:
    """The small part of a batch's result: what the client needs to know."""
    return batch.summaries


def batch_item(batch: BatchOutput, index: int) -> Any:
    """One output value of a batch (for ``fetch``)."""
    return batch.values[index]
