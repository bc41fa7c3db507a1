"""The dask executor's payloads (``_dask_parts.pack``/``unpack``), without a cluster."""

from __future__ import annotations

import os
import pickle
import tracemalloc

from mlflowkit.executors import _dask_parts as parts
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


def test_a_wide_gather_unpacks_to_the_same_inputs_in_the_same_kind_of_sequence() -> None:
    n = parts.ROW_AT_LEAST + 5
    names = [f"square[{i}]" for i in range(n)]
    held = [Input(name, "d" * 64, DaskRef(f"b{i % 3}", i)) for i, name in enumerate(names)]
    args = {"tup": tuple(held), "lst": list(held), "n": 3}
    payload, deps = pack([_task(args)], lambda key: None)
    (task,) = unpack(payload)
    want = [Input(name, "", Dep(i % 3, i)) for i, name in enumerate(names)]
    assert deps == ("b0", "b1", "b2")
    assert task.args["tup"] == tuple(want) and type(task.args["tup"]) is tuple
    assert task.args["lst"] == want and type(task.args["lst"]) is list
    assert task.args["n"] == 3


def test_a_gather_with_other_items_or_odd_names_goes_item_by_item_and_unpacks_the_same() -> None:
    n = parts.ROW_AT_LEAST + 1
    held = [Input(f"s[{i}]", "d" * 64, DaskRef("b", i)) for i in range(n)]
    mixed = (*held, Input("c", "e" * 64, Stored("e" * 64)))  # not every value is on a worker
    odd = [Input(f"s\0{i}", "d" * 64, DaskRef("b", i)) for i in range(n)]  # NUL in a name
    (task,) = unpack(pack([_task({"mixed": mixed, "odd": odd})], lambda key: None)[0])
    assert task.args["mixed"][-1] == Input("c", "", Stored("e" * 64))
    assert task.args["mixed"][:-1] == tuple(Input(f"s[{i}]", "", Dep(0, i)) for i in range(n))
    assert task.args["odd"] == [Input(f"s\0{i}", "", Dep(0, i)) for i in range(n)]


def test_packing_a_wide_gather_holds_little_memory_on_the_way() -> None:
    # the driver's peak memory at 100k mapped elements: a pickle memo entry, a tuple and a
    # callback per input cost ~180 bytes per item while the payload is written
    n = 20_000
    items = tuple(Input(f"square[{i}]", f"{i:064x}", DaskRef(f"b{i % 8}", i)) for i in range(n))
    task = _task({"values": items})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pack([task], lambda key: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (peak - before) / n < 130  # ~100 as rows, ~215 item by item


def test_many_small_tasks_travel_compressed_and_unpack_the_same() -> None:
    tasks = [_task({"i": i, "name": f"element {i}"}) for i in range(500)]
    plain = pickle.dumps(tasks)
    payload, _ = pack(tasks, lambda key: None)
    assert payload[:1] == b"\x78" and len(payload) < len(plain) // 2
    got = unpack(memoryview(payload))
    assert [(t.name, t.key, t.args) for t in got] == [(t.name, t.key, t.args) for t in tasks]


def test_a_payload_that_does_not_compress_or_is_small_travels_as_pickled() -> None:
    noise = os.urandom(parts.COMPRESS_SAMPLE * 2)  # an array of floats compresses as badly
    for args in ({"blob": noise}, {"n": 1}):
        payload, _ = pack([_task(args)], lambda key: None)
        assert payload[:1] == b"\x80"  # a pickle's PROTO opcode: not compressed
        (task,) = unpack(payload)
        assert task.args == args


def test_a_reported_batch_drops_its_tasks_and_keeps_what_a_rebuild_needs() -> None:
    got: list[TaskResult] = []
    sent = Sent([(_task({}), got.append), (_task({}), got.append)])
    sent.payload, sent.deps = pack([t for t, _ in sent.items], lambda key: None)
    assert sent.names() == "'count', 'count'"
    sent.release()
    assert sent.items == [] and sent.payload and sent.size == 2
    assert sent.names() == "'count' and 1 more"


def test_a_cached_gather_handed_on_as_derived_ships_its_items_as_a_row() -> None:
    # a gather that was a cache hit reaches its consumer as ``Derived(gather, {"items": ...})``
    from mlflowkit.executors.base import Derived
    from mlflowkit.plan import OPS

    n = 10_000
    items = tuple(Input(f"square[{i}]", f"{i:064x}", DaskRef(f"b{i % 8}", i)) for i in range(n))
    gathered = Input("square", "g" * 64, Derived(OPS["gather"], {"items": items}))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        payload, deps = pack([_task({"values": gathered})], lambda key: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(deps) == 8
    assert (peak - before) / n < 130  # ~100 as a row, ~215 item by item
    (task,) = unpack(payload)
    derived = task.args["values"].handle
    assert derived.step.qualified_name == OPS["gather"].qualified_name
    assert derived.args["items"] == tuple(
        Input(f"square[{i}]", "", Dep(deps.index(f"b{i % 8}"), i)) for i in range(n)
    )
