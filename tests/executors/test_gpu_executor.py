"""The ``gpu`` executor: placement, device-resident values, background writes.

Most tests run everywhere: the executor takes its device operations from a ``DeviceBackend``,
and ``FakeBackend`` below is one on the CPU, whose "device arrays" are ``FakeDeviceArray``
(an ``ndarray`` subclass that knows its device, so it hashes like the equal NumPy array). Every
copy between "devices" and the host goes through the backend, where it is counted.

Tests marked ``gpu`` need CuPy and a real CUDA device, and skip cleanly without them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import mlflowkit as mk
from mlflowkit.executors.base import Executor, InMemory, Input, Task, TaskResult
from mlflowkit.executors.gpu import DeviceBackend, GpuExecutor
from mlflowkit.testing import ExecutorContract

ROOT = Path(__file__).resolve().parents[2]
HAVE_CUPY = importlib.util.find_spec("cupy") is not None

# --- a device backend on the CPU ----------------------------------------------------------------
_CURRENT = threading.local()  # the fake "current device" of this thread


def _current_device() -> int | None:
    device: int | None = getattr(_CURRENT, "device", None)
    return device


class FakeDeviceArray(np.ndarray):  # type: ignore[type-arg]
    """An array standing for one in device memory: it remembers its device."""

    device_id: int

    def __array_finalize__(self, obj: Any) -> None:
        current = _current_device()
        self.device_id = getattr(obj, "device_id", -1 if current is None else current)


def on_device(data: Any) -> FakeDeviceArray:
    """``data`` as a fake device array on the current device (inside a GPU step only)."""
    device = _current_device()
    if device is None:
        raise RuntimeError("expected to run inside a device context, found none")
    out = np.array(data).view(FakeDeviceArray)
    out.device_id = device
    return out


def expect_here(x: Any) -> None:
    """Raise unless ``x`` is a fake device array on the current device."""
    if not isinstance(x, FakeDeviceArray):
        raise TypeError(f"expected a device array, found {type(x).__name__}")
    if x.device_id != _current_device():
        raise ValueError(f"expected an array on device {_current_device()}, found {x.device_id}")


class FakeBackend:
    """A ``DeviceBackend`` on the CPU.

    Parameters
    ----------
    devices:
        Number of fake devices.
    gate:
        When given, copies for the store wait until it is set (a slow store write).
    fail:
        When given, copies for the store raise it (a failing store write).
    """

    def __init__(
        self,
        devices: int = 2,
        *,
        gate: threading.Event | None = None,
        fail: BaseException | None = None,
    ) -> None:
        self.devices = devices
        self.gate = gate
        self.fail = fail
        self.events: list[object] = []

    def device_count(self) -> int:
        return self.devices

    def total_memory(self, device: int) -> int:
        return 1 << 30

    @contextmanager
    def device_context(self, device: int) -> Iterator[object]:
        previous = _current_device()
        _CURRENT.device = device
        try:
            yield device
        finally:
            _CURRENT.device = previous

    def is_device_value(self, value: object) -> bool:
        return isinstance(value, FakeDeviceArray)

    def device_of(self, value: Any) -> int:
        return int(value.device_id)

    def to_device(self, value: Any, device: int) -> Any:
        out = np.array(value, subok=False).view(FakeDeviceArray)
        out.device_id = device
        return out

    def to_host(self, value: Any, *, after: object = None, background: bool = False) -> Any:
        if background:
            self.events.append(after)
            if self.gate is not None and not self.gate.wait(30):
                raise TimeoutError("the test never opened the gate")
            if self.fail is not None:
                raise self.fail
        return np.array(value, subok=False)

    def record_event(self) -> object:
        return ("event", _current_device())


# --- steps and pipelines ------------------------------------------------------------------------
@mk.step(resources={"gpu": 1})
def make(n: int) -> Any:
    """``0 .. n-1`` as float64, on the device."""
    return on_device(np.arange(n, dtype=np.float64))


@mk.step(resources={"gpu": 1})
def bump(x: Any, i: int) -> Any:
    """``x + i``, checking that ``x`` is on this step's device."""
    expect_here(x)
    return x + i


@mk.step(resources={"gpu": 1})
def halves(x: Any) -> tuple[Any, Any]:
    """The two halves of ``x`` (copies), on the device."""
    expect_here(x)
    k = len(x) // 2
    return x[:k] * 1, x[k:] * 1


@mk.step(resources={"gpu": 1})
def scale_in_place(x: Any) -> float:
    """Misbehaves: modifies its input in place.

    A real device array (CuPy) cannot be made read-only, so mlflowkit passes it as it is; this
    fake is a NumPy subclass, which arrives as a read-only view: made writable again here, to
    misbehave as a device step can.
    """
    x.setflags(write=True)
    x *= 2
    return float(x.sum())


@mk.step(resources={"gpu": 2})
def greedy(x: int) -> int:
    return x


@mk.step
def host_sum(x: Any) -> float:
    """The sum of ``x``, checking that it is a NumPy array on the host."""
    if type(x) is not np.ndarray:
        raise TypeError(f"expected a NumPy array, found {type(x).__name__}")
    return float(x.sum())


@mk.step
def host_max(x: Any) -> float:
    if type(x) is not np.ndarray:
        raise TypeError(f"expected a NumPy array, found {type(x).__name__}")
    return float(x.max())


@mk.step
def host_total(xs: tuple[Any, ...]) -> float:
    """The total of several arrays, checking that each is a NumPy array on the host."""
    for x in xs:
        if type(x) is not np.ndarray:
            raise TypeError(f"expected NumPy arrays, found {type(x).__name__}")
    return float(sum(x.sum() for x in xs))


@mk.step
def host_range(n: int) -> NDArray[np.float64]:
    return np.arange(n, dtype=np.float64)


@mk.step
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@mk.pipeline
def chain(n: int = 100, steps: int = 3) -> Any:
    x = make(n)
    for i in range(steps):
        x = bump(x, i)
    return host_sum(x)


@mk.pipeline
def device_only(n: int = 100) -> Any:
    return make(n)


@mk.pipeline
def from_host(n: int = 100) -> Any:
    return host_sum(bump(host_range(n), 1))


@mk.pipeline
def split(n: int = 100) -> Any:
    a, b = halves(make(n))
    return {"a": host_sum(bump(a, 1)), "b": host_sum(b)}


@mk.pipeline
def tuple_of_device_values(n: int = 100) -> Any:
    return host_total((make(n), make(2 * n)))


@mk.pipeline
def two_readers(n: int = 100) -> Any:
    x = make(n)
    return [host_sum(x), host_max(x)]


@mk.pipeline
def mutating(n: int = 100) -> Any:
    return scale_in_place(make(n))


@mk.pipeline
def wants_two(x: int = 1) -> Any:
    return greedy(x)


@mk.pipeline
def marked_then_gpu(path: str = "") -> Any:
    touch(path)
    return make(3)


def chain_values(n: int, steps: int) -> list[NDArray[np.float64]]:
    values = [np.arange(n, dtype=np.float64)]
    for i in range(steps):
        values.append(values[-1] + i)
    return values


# --- fixtures and helpers -----------------------------------------------------------------------
@pytest.fixture
def executors() -> Iterator[list[GpuExecutor]]:
    """Executors made by a test; each is shut down afterwards (a failure to do so is shown)."""
    made: list[GpuExecutor] = []
    yield made
    for ex in made:
        gate = getattr(ex.backend, "gate", None)
        if gate is not None:
            gate.set()  # never leave a writer waiting
        with contextlib.suppress(mk.StoreError):  # provoked by the test, which checked it
            ex.shutdown()


def fake(
    executors: list[GpuExecutor],
    *,
    gate: threading.Event | None = None,
    fail: BaseException | None = None,
    **options: Any,
) -> GpuExecutor:
    """A ``GpuExecutor`` on a two-device ``FakeBackend``, shut down after the test."""
    ex = GpuExecutor(backend=FakeBackend(2, gate=gate, fail=fail), **options)
    executors.append(ex)
    return ex


def assert_written(store: mk.Store, result: mk.Run, names: list[str]) -> None:
    """Each named step has a cache entry, and its object is stored."""
    for name in names:
        key = result.step(name).key
        assert key is not None
        entry = store.get_cache(key)
        assert entry is not None and entry.stored, name
        assert store.has(entry.output_digest), name


def run(plan: mk.Plan, executor: Any, store: Any) -> mk.Run:
    return plan.run(executor=executor, store=store, progress=False)


def submit(ex: Executor, task: Task) -> TaskResult:
    results: queue.SimpleQueue[TaskResult] = queue.SimpleQueue()
    ex.submit(task, results.put)
    return results.get(timeout=30)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(0.01)


# --- no CuPy, no GPU: clear errors, nothing runs ------------------------------------------------
@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_constructing_without_cupy_says_what_and_how() -> None:
    with pytest.raises(mk.ExecutorError) as info:
        GpuExecutor()
    message = str(info.value)
    assert "cupy" in message.lower()
    assert "pip install 'mlflowkit[gpu]'" in message
    assert "NVIDIA GPU" in message
    assert "dask" in message


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_registry_without_cupy_gives_the_install_hint() -> None:
    with pytest.raises(mk.ExecutorError, match=r"mlflowkit\[gpu\]"):
        mk.executors.get("gpu")
    assert "gpu" not in mk.executors.available()


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_run_by_name_without_cupy_runs_nothing(tmp_path: Path, store: mk.Store) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(mk.ExecutorError, match=r"mlflowkit\[gpu\]"):
        run(marked_then_gpu.plan(path=str(marker)), "gpu", store)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["local", "threads"])
def test_cpu_executors_refuse_gpu_steps_before_anything_runs(
    name: str, tmp_path: Path, store: mk.Store
) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(mk.ExecutorError) as info:
        run(marked_then_gpu.plan(path=str(marker)), name, store)
    assert info.value.step == "make"
    assert "'make'" in str(info.value)
    assert "GPU" in str(info.value)
    assert "Nothing was run" in str(info.value)
    assert not marker.exists()
    assert store.runs() == []


def test_a_backend_without_devices_is_refused() -> None:
    with pytest.raises(mk.ExecutorError, match="found none"):
        GpuExecutor(backend=FakeBackend(0))


@pytest.mark.parametrize("devices", [[2], [0, 0], [], ["0"], [True]])
def test_unknown_devices_are_refused(devices: list[Any]) -> None:
    with pytest.raises(mk.ExecutorError, match=r"devices= expected distinct device numbers"):
        GpuExecutor(devices=devices, backend=FakeBackend(2))


def test_capabilities_count_the_devices(executors: list[GpuExecutor]) -> None:
    ex = fake(executors)
    assert isinstance(ex.backend, DeviceBackend)
    assert ex.capabilities.gpus == 2
    assert ex.capabilities.shares_memory and ex.capabilities.parallel
    one = fake(executors, devices=[1])
    assert one.capabilities.gpus == 1
    assert one.devices == (1,)
    assert "devices [1]" in one.describe()


def test_a_step_asking_for_two_gpus_is_refused(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    with pytest.raises(mk.RunFailed) as info:
        run(wants_two.plan(), fake(executors), store)
    assert isinstance(info.value.__cause__, mk.ExecutorError)
    assert "one device" in str(info.value.__cause__)


def test_importing_the_module_does_not_import_cupy() -> None:
    code = (
        "import sys, mlflowkit, mlflowkit.executors.gpu; "
        "assert 'cupy' not in sys.modules, 'cupy was imported'"
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# --- values: on the device between GPU steps, on the host for CPU steps -------------------------
def test_a_chain_of_gpu_steps_stays_on_its_device(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors)
    result = run(chain.plan(n=1000, steps=3), ex, store)
    ex.wait()
    values = chain_values(1000, 3)
    assert result.output == float(values[-1].sum())
    stats = ex.stats
    assert stats["h2d_bytes"] == 0
    assert stats["d2d_bytes"] == 0
    assert stats["background_writes"] == 4  # make and three bumps
    assert stats["skipped_writes"] == 1  # bump(x, 0) equals x, which is stored already
    assert stats["background_bytes"] == 3 * 8000
    assert stats["d2h_bytes"] == 4 * 8000  # the writes, and host_sum's copy
    assert stats["write_failures"] == 0
    names = ["make", "bump", "bump-2", "bump-3"]
    for name, value in zip(names, values, strict=True):
        digest = result.step(name).output_digest
        assert digest == mk.hash_value(value), name  # the digests of the CPU values
        stored = store.get(digest)
        assert type(stored) is np.ndarray
        np.testing.assert_array_equal(stored, value)
    # each background copy was ordered after the work of the step that made the value
    assert all(isinstance(e, tuple) and e[0] == "event" for e in ex.backend.events)  # type: ignore[attr-defined]


def test_a_cpu_step_output_is_copied_to_the_device(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors)
    result = run(from_host.plan(n=50), ex, store)
    assert result.output == float((np.arange(50.0) + 1).sum())
    assert ex.stats["h2d_bytes"] == 400
    ex.wait()
    assert ex.stats["d2h_bytes"] == 2 * 400  # bump's write, and host_sum's copy


def test_device_values_passed_in_a_tuple_reach_a_cpu_step_on_the_host(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors)
    result = run(tuple_of_device_values.plan(n=10), ex, store)
    assert result.output == float(np.arange(10.0).sum() + np.arange(20.0).sum())


def test_cache_hits_are_loaded_onto_the_device(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    first = fake(executors)
    run(chain.plan(n=100, steps=2), first, store)
    first.wait()
    again = fake(executors)
    result = run(chain.plan(n=100, steps=3), again, store)
    statuses = {s.name: s.status for s in result.steps}
    assert statuses == {
        "make": "cached",
        "bump": "cached",
        "bump-2": "cached",
        "bump-3": "executed",  # reads bump-2's output from the store, as a device array
        "host_sum": "executed",
    }
    assert again.stats["h2d_bytes"] == 800
    assert result.output == float(chain_values(100, 3)[-1].sum())


def test_derived_values_pass_through_without_copies(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors)
    result = run(split.plan(n=100), ex, store)
    assert result.output == {
        "a": float((np.arange(50.0) + 1).sum()),
        "b": float(np.arange(50.0, 100.0).sum()),
    }
    ex.wait()
    stats = ex.stats
    assert stats["h2d_bytes"] == 0
    assert stats["d2d_bytes"] == 0
    assert stats["d2h_bytes"] - stats["background_bytes"] == 2 * 400  # the two host_sum inputs


def test_a_value_is_copied_once_per_target(executors: list[GpuExecutor], store: mk.Store) -> None:
    ex = fake(executors)
    result = run(two_readers.plan(n=100), ex, store)
    assert result.output == [float(np.arange(100.0).sum()), 99.0]
    ex.wait()
    stats = ex.stats
    assert stats["d2h_bytes"] - stats["background_bytes"] == 800


def test_inputs_on_another_device_are_copied_device_to_device(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors)
    ex.start(store)

    @mk.step(resources={"gpu": 1})
    def where(a: Any, b: Any) -> tuple[int, int, int | None]:
        return int(a.device_id), int(b.device_id), _current_device()

    backend = ex.backend
    big = backend.to_device(np.arange(1000.0), 1)
    small = backend.to_device(np.arange(10.0), 0)
    task = Task(
        name="where",
        step=where,
        key="0" * 64,
        run_id="test",
        args={
            "a": Input("big", mk.hash_value(big), InMemory(big)),
            "b": Input("small", mk.hash_value(small), InMemory(small)),
        },
        store_value=False,
        cache_entry=False,
    )
    result = submit(ex, task)
    assert result.ok, result.traceback
    assert result.value.value == (1, 1, 1)  # placed where most input bytes are
    assert ex.stats["d2d_bytes"] == 80
    assert ex.stats["h2d_bytes"] == 0


# --- background writes --------------------------------------------------------------------------
def test_results_are_reported_before_their_writes_end(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    gate = threading.Event()
    ex = fake(executors, gate=gate)
    result = run(chain.plan(n=100, steps=2), ex, store)
    assert result.status == "succeeded"
    assert result.output == float(chain_values(100, 2)[-1].sum())
    for name in ("make", "bump", "bump-2"):
        key = result.step(name).key
        assert key is not None
        assert store.get_cache(key) is None  # still being written
    assert ex.stats["background_writes"] == 0
    sum_key = result.step("host_sum").key
    assert sum_key is not None and store.get_cache(sum_key) is not None  # written in line
    gate.set()
    ex.wait()
    assert ex.stats["background_writes"] == 3
    assert_written(store, result, ["make", "bump", "bump-2"])


def test_shutdown_waits_for_pending_writes(executors: list[GpuExecutor], store: mk.Store) -> None:
    gate = threading.Event()
    ex = fake(executors, gate=gate)
    result = run(chain.plan(n=100, steps=1), ex, store)
    timer = threading.Timer(0.2, gate.set)
    timer.start()
    ex.shutdown()
    timer.join()
    assert ex.stats["background_writes"] == 2
    assert_written(store, result, ["make", "bump", "host_sum"])


def test_a_failed_write_is_raised_at_shutdown_and_leaves_no_cache_entry(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    gate = threading.Event()
    ex = fake(executors, gate=gate, fail=OSError("No space left on device"))
    result = run(device_only.plan(n=100), ex, store)
    assert result.status == "succeeded"
    gate.set()
    with pytest.raises(mk.StoreError) as info:
        ex.shutdown()
    message = str(info.value)
    assert "'make'" in message and "No space left on device" in message
    assert isinstance(info.value.__cause__, OSError)
    assert ex.stats["write_failures"] == 1
    key = result.step("make").key
    assert key is not None and store.get_cache(key) is None
    digest = result.step("make").output_digest
    assert digest is not None and not store.has(digest)
    ex.shutdown()  # raised once
    again = fake(executors)
    assert run(device_only.plan(n=100), again, store).step("make").status == "executed"


def test_a_failed_write_refuses_the_next_submission(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors, fail=OSError("read-only file system"))
    run(device_only.plan(n=100), ex, store)
    wait_for(lambda: ex.stats["write_failures"] == 1)
    task = Task(name="next", step=host_sum, key="1" * 64, run_id="test", args={"x": [1.0]})
    with pytest.raises(mk.StoreError) as info:
        ex.submit(task, lambda result: None)
    assert "'make'" in str(info.value) and "read-only file system" in str(info.value)
    ex.start(store)  # raised once: the executor serves the next run
    backend = ex.backend
    assert isinstance(backend, FakeBackend)
    backend.fail = None  # the store works again
    assert run(chain.plan(n=10, steps=1), ex, store).status == "succeeded"


def test_a_failed_write_of_a_run_fails_the_next_run_on_that_executor(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    ex = fake(executors, fail=OSError("read-only file system"))
    run(device_only.plan(n=100), ex, store)
    with pytest.raises(mk.StoreError, match="read-only file system"):
        run(chain.plan(n=10, steps=1), ex, store)  # start() waits for the earlier writes
    ex.shutdown()  # already reported: nothing more to raise


def test_a_value_modified_in_place_is_not_stored(
    executors: list[GpuExecutor], store: mk.Store
) -> None:
    gate = threading.Event()
    ex = fake(executors, gate=gate)
    result = run(mutating.plan(n=10), ex, store)
    assert result.output == 2 * float(np.arange(10.0).sum())
    gate.set()
    with pytest.raises(mk.StoreError, match="modified its input in place"):
        ex.wait()
    key = result.step("make").key
    assert key is not None and store.get_cache(key) is None


def test_pending_writes_are_bounded(executors: list[GpuExecutor], store: mk.Store) -> None:
    gate = threading.Event()
    ex = fake(executors, gate=gate, max_pending_bytes=1)
    done: list[mk.Run] = []
    runner = threading.Thread(
        target=lambda: done.append(run(chain.plan(n=100, steps=2), ex, store))
    )
    runner.start()
    try:
        time.sleep(0.5)
        assert runner.is_alive()  # bump waits for make's write before it is reported
        assert ex.stats["background_writes"] == 0
    finally:
        gate.set()
        runner.join(30)
    assert done and done[0].status == "succeeded"
    ex.wait()
    assert ex.stats["background_writes"] == 3


def test_stats_are_a_snapshot(executors: list[GpuExecutor]) -> None:
    ex = fake(executors)
    snapshot = ex.stats
    snapshot["h2d_bytes"] = 99
    assert ex.stats["h2d_bytes"] == 0
    assert set(snapshot) >= {"h2d_bytes", "d2h_bytes", "d2d_bytes", "background_writes"}


# --- the shipped executor contract, with the fake backend ---------------------------------------
class TestGpuExecutorContract(ExecutorContract):
    def make_executor(self) -> Executor:
        return GpuExecutor(backend=FakeBackend(), max_workers=4)


# --- on a real device ---------------------------------------------------------------------------
@pytest.fixture
def cupy() -> Any:
    """CuPy, when it and a CUDA device are there (else the test is skipped)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("the CUDA simulator is enabled; this needs a real device")
    module = pytest.importorskip("cupy", reason="needs CuPy and a CUDA device")
    import mlflowkit.gpu

    if not mlflowkit.gpu.available():
        pytest.skip("needs a CUDA device (numba.cuda.is_available() is False)")
    return module


@mk.step(resources={"gpu": 1})
def cp_make(n: int) -> Any:
    import cupy

    return cupy.arange(n, dtype=cupy.float64)


@mk.step(resources={"gpu": 1})
def cp_bump(x: Any, i: int) -> Any:
    import cupy

    if not isinstance(x, cupy.ndarray):
        raise TypeError(f"expected a CuPy array, found {type(x).__name__}")
    if x.device.id != cupy.cuda.Device().id:
        raise ValueError(
            f"expected an array on device {cupy.cuda.Device().id}, found {x.device.id}"
        )
    return x + i


@pytest.mark.gpu
def test_cupy_chain_stays_on_the_device(cupy: Any, tmp_path: Path) -> None:
    @mk.pipeline
    def cp_chain(n: int = 1000, steps: int = 3) -> Any:
        x = cp_make(n)
        for i in range(steps):
            x = cp_bump(x, i)
        return host_sum(x)

    store = mk.Store(str(tmp_path / "store"))
    ex = GpuExecutor()
    try:
        result = run(cp_chain.plan(n=1 << 20, steps=3), ex, store)
        ex.wait()
        stats = ex.stats
    finally:
        ex.shutdown()
    values = chain_values(1 << 20, 3)
    assert result.output == float(values[-1].sum())
    assert stats["h2d_bytes"] == 0
    assert stats["background_writes"] == 4
    for name, value in zip(["cp_make", "cp_bump", "cp_bump-2", "cp_bump-3"], values, strict=True):
        digest = result.step(name).output_digest
        assert digest == mk.hash_value(value)
        np.testing.assert_array_equal(store.get(digest), value)
    # the same pipeline, cached, extended by one step: its input comes from the store
    ex = GpuExecutor()
    try:
        longer = run(cp_chain.plan(n=1 << 20, steps=4), ex, store)
        assert ex.stats["h2d_bytes"] == 8 << 20
    finally:
        ex.shutdown()
    assert longer.output == float(chain_values(1 << 20, 4)[-1].sum())


@pytest.mark.gpu
def test_cupy_run_by_name_writes_everything_before_returning(cupy: Any, tmp_path: Path) -> None:
    @mk.pipeline
    def cp_pair(n: int = 1000) -> Any:
        return cp_bump(cp_make(n), 1)

    store = mk.Store(str(tmp_path / "store"))
    result = run(cp_pair.plan(n=4096), "gpu", store)  # shut down (writes done) on return
    assert isinstance(result.output, cupy.ndarray)
    assert_written(store, result, ["cp_make", "cp_bump"])
    np.testing.assert_array_equal(cupy.asnumpy(result.output), np.arange(4096.0) + 1)
