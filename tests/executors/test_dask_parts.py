"""The dask executor's payloads (``_dask_parts.pack``/``unpack``), without a cluster."""

from __future__ import annotations

from mlflowkit.executors._dask_parts import DaskRef, Dep, Sent, pack, unpack
from mlflowkit.executors.base import Input, Stored, Task, TaskResult
from tests.resources import dag_executors as dx


def _task(args: dict[str, object]) -> Task:
    return Task("count", dx.count, "k" * 64, "r" * 32, args, False, False, False, ())


def test_a_payload_names_the_batches_it_reads_and_unpacks_as_the_worker_reads_it() -> None:
    checked: list[str] = []
    items = (
        Input("a[0]", "d" * 64, DaskRef("batch-1", 3)),
        Input("a[1]", "e" * 64, DaskRef("batch-2", 0)),
        Input("a[2]", "f" * 64, DaskRef("batch-1", 4)),
        Input("b", "g" * 64, Stored("g" * 64)),
    )
    payload, deps = pack([_task({"values": items, "n": 7})], checked.append)
    assert deps == ("batch-1", "batch-2") and checked == ["batch-1", "batch-2"]
    (task,) = unpack(memoryview(payload))  # Dask hands it over as any buffer
    assert task.name == "count" and task.key == "k" * 64 and task.args["n"] == 7
    assert task.args["values"] == (
        Input("a[0]", "", Dep(0, 3)),  # digests serve the driver only: not shipped
        Input("a[1]", "", Dep(1, 0)),
        Input("a[2]", "", Dep(0, 4)),
        Input("b", "", Stored("g" * 64)),
    )


def test_a_wide_gather_ships_a_few_bytes_per_item() -> None:
    # the driver's memory per mapped element at 100k: Dask copies this payload several times
    n = 10_000
    items = tuple(Input(f"square[{i}]", f"{i:064x}", DaskRef(f"b{i % 8}", i)) for i in range(n))
    payload, deps = pack([_task({"values": items})], lambda key: None)
    assert len(deps) == 8
    assert len(payload) / n < 40


def test_a_reported_batch_drops_its_tasks_and_keeps_what_a_rebuild_needs() -> None:
    got: list[TaskResult] = []
    sent = Sent([(_task({}), got.append), (_task({}), got.append)])
    sent.payload, sent.deps = pack([t for t, _ in sent.items], lambda key: None)
    assert sent.names() == "'count', 'count'"
    sent.release()
    assert sent.items == [] and sent.payload and sent.size == 2
    assert sent.names() == "'count' and 1 more"
