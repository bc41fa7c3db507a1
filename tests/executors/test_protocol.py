"""The framing the ``processes`` executor speaks over its pipes (round trips, by property)."""

from __future__ import annotations

import threading
from multiprocessing import Pipe
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from mlflowkit.executors import _procworker as proto
from mlflowkit.executors._remote import RemoteError, portable_error

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.binary(max_size=64)
    | arrays(np.float64, array_shapes(max_dims=2, max_side=300), elements=st.floats(0, 1)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=60, deadline=None)
@given(header=st.tuples(st.text(max_size=8), st.integers()), body=values)
def test_a_message_survives_a_real_pipe(header: tuple[str, int], body: Any) -> None:
    rx, tx = Pipe(duplex=False)
    frames = proto.encode(header, proto.dumps_body(body))
    sender = threading.Thread(target=proto.send, args=(tx, frames))  # may exceed the buffer
    sender.start()
    got_header, got_body = proto.decode(proto.recv(rx))
    sender.join()
    rx.close()
    tx.close()
    assert got_header == header
    assert _same(proto.loads_body(got_body), body)


def test_arrays_arrive_writable() -> None:
    rx, tx = Pipe(duplex=False)
    frames = proto.encode(("x",), proto.dumps_body(np.arange(100_000.0)))
    sender = threading.Thread(target=proto.send, args=(tx, frames))
    sender.start()
    _, body = proto.decode(proto.recv(rx))
    sender.join()
    array = proto.loads_body(body)
    array += 1  # would raise on a read-only buffer
    assert array[0] == 1.0


def test_unpicklable_errors_become_remote_errors() -> None:
    class Local(Exception):
        def __reduce__(self) -> Any:
            raise TypeError("no pickling")

    error = portable_error(Local("bad thing"))
    assert isinstance(error, RemoteError)
    assert "Local" in error.type_name and "bad thing" in str(error)
    plain = ValueError("fine")
    assert portable_error(plain) is plain


def test_what_refers_to_main_is_shipped_by_value() -> None:
    """The standard pickler goes first, but never for what it would name in ``__main__``
    (a worker process has another ``__main__``): cloudpickle ships that by value."""
    import __main__

    def triple(x: int) -> int:
        return 3 * x

    triple.__module__ = "__main__"
    triple.__qualname__ = "_mlflowkit_test_triple"
    __main__._mlflowkit_test_triple = triple  # type: ignore[attr-defined]
    try:
        frames = proto.dumps_body({"fn": triple})
    finally:
        del __main__._mlflowkit_test_triple  # type: ignore[attr-defined]
    # the standard pickler would have pickled it by name; this must not need the name
    assert proto.loads_body(frames)["fn"](2) == 6


def test_local_functions_and_lambdas_fall_back_to_cloudpickle() -> None:
    scale = 4
    body = proto.loads_body(proto.dumps_body([lambda x: x * scale, {"k": (1, 2.0)}]))
    assert body[0](2) == 8 and body[1] == {"k": (1, 2.0)}


def test_a_batch_of_tasks_travels_as_rows_and_comes_back_whole() -> None:
    from mlflowkit.executors.base import InMemory, Input, Stored, Task
    from tests.resources import dag_executors as dx

    tasks = [
        Task(
            f"inc[{i}]",
            dx.inc,
            f"key{i}",
            "run",
            {"x": Input("ids", "d" * 64, InMemory(i)), "y": Input("z", "e", Stored("e"))},
            store_value=i % 2 == 0,
            checks=("x",),
        )
        for i in range(3)
    ]
    back = proto.loads_tasks(proto.dumps_tasks(tasks))
    assert back == tasks
    assert back[0].step is dx.inc  # by reference: the same step object
