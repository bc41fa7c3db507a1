"""The ``gpu`` executor: steps on CUDA devices, values kept on the device, writes in the background.

Placement
---------
* One worker thread per device (the ``devices`` given, else every visible one). A step that
  asks for a GPU (``resources={"gpu": n}``, ``0 < n <= 1``) runs on one device's worker, inside
  ``with cupy.cuda.Device(i):``. Steps that ask for no GPU run on a pool of CPU threads in the
  same process, so a pipeline mixing both runs with ``executor="gpu"``. A step asking for more
  than one GPU is refused with :class:`~mlflowkit.errors.ExecutorError` (a step is placed on
  one device).
* A GPU step goes to the device that holds most of the bytes of its device-resident inputs (so
  nothing is copied); when none of its inputs is on a device, to the device with the fewest
  queued steps.
* Derived values (``ref[0]``, ``ref.attr`` and the gathers of ``map``) run on the CPU threads
  with their inputs as they are, wherever those live: they never cause a copy.
* There is no silent CPU fallback: without CuPy, or without a CUDA device, building the
  executor raises :class:`~mlflowkit.errors.ExecutorError` saying what was looked for and how
  to fix it.

Values
------
*Device arrays* are CuPy arrays. They are found at any depth of plain ``list``, ``tuple`` and
``dict`` containers; any other object is passed as it is. For the upstream values of a step
(outputs of other steps, whether computed in this run or loaded from the store):

* a GPU step receives every array on its own device: a device array already there as it is (no
  copy), a device array on another device copied device to device, and a NumPy array of a
  bool, integer, float or complex dtype copied host to device. NumPy arrays come from CPU steps,
  or from the store on a cache hit; either way a GPU step sees the same types, whatever the state
  of the cache;
* a CPU step receives host (NumPy) copies of device arrays;
* each value is copied at most once per target (device or host) while the run lasts.

Plain values written in the pipeline body are passed as given.

Outputs and writes
------------------
* An output is hashed where it lives (``mk.hash_value`` hashes device arrays on the device) and
  its ``TaskResult`` (digest, and an ``InMemory`` handle to the value itself, on its device) is
  reported right after: the consumers of a GPU step's output read it on the device.
* An output holding device arrays is written to the store in the background, by one writer
  thread per device: it copies the output to pinned host memory on its own CUDA stream (ordered
  after the producing step's work), checks that the device value still has the reported digest
  (re-hashed on the device), writes the object, and only *then* the cache entry. Any other
  output is written before its step is reported, as on the ``threads`` executor.
* Pending writes hold their device memory: when they exceed ``max_pending_bytes``, a step that
  finishes waits for the writers to catch up before it is reported.
* Nothing is lost: :meth:`GpuExecutor.wait` and :meth:`GpuExecutor.shutdown` wait for every
  pending write, and :meth:`GpuExecutor.start` waits for the previous run's. A failed write is
  never silent: no cache entry is written for it, the next ``submit`` is refused with
  :class:`~mlflowkit.errors.StoreError` (so the run fails), and otherwise ``wait``,
  ``shutdown`` or ``start`` raises it. Each failure is raised once.
* Steps must not modify their inputs in place (on any executor that shares memory, a sibling
  would see the change); here a background write would also copy the changed value. The
  re-hash after the copy catches that, and the write fails with a ``StoreError`` instead of
  storing bytes that do not match their digest.
* Two runs on one store reaching the same call: the single-flight lock is released when the
  step is reported, before its background write ends, so the other run may execute the call
  again (duplicate work, never a wrong result).

Counters
--------
``GpuExecutor.stats`` counts, over the executor's lifetime, the bytes copied host to device
(``h2d_bytes``), device to host (``d2h_bytes``, for CPU steps and for the store) and device to
device (``d2d_bytes``), the background writes done (``background_writes``), the bytes they
copied to the host (``background_bytes``), writes skipped because the object was already stored
(``skipped_writes``), and failed writes (``write_failures``).

The device operations go through a small :class:`DeviceBackend` interface; the default,
:class:`CupyBackend`, uses CuPy. CuPy is imported only when a ``CupyBackend`` is built, never
when this module is imported.
"""

from __future__ import annotations

import itertools
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from mlflowkit.errors import ExecutorError, MlflowkitError, StoreError
from mlflowkit.executors.base import (
    Capabilities,
    Derived,
    Executor,
    InMemory,
    Input,
    Stored,
    Task,
    TaskResult,
)
from mlflowkit.placeholders import leaves
from mlflowkit.plan import OPS as _OPS
from mlflowkit.stepcall import Writer, call_step, execute, local_resolver, resolve_template
from mlflowkit.stepcall import write_output as _write_output

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["CupyBackend", "DeviceBackend", "GpuExecutor"]

#: Resolver targets other than a device number.
_HOST = -1  # a CPU step: device arrays become NumPy arrays
_AS_IS = -2  # a derived value: nothing is moved

#: NumPy dtype kinds a GPU step receives as device arrays (bool, integers, floats, complex).
_MOVABLE_KINDS = frozenset("biufc")

_STAT_KEYS = (
    "h2d_bytes",
    "d2h_bytes",
    "d2d_bytes",
    "background_writes",
    "background_bytes",
    "skipped_writes",
    "write_failures",
)

_FIX = (
    "Fix: install the GPU extra on a machine with an NVIDIA GPU (pip install "
    "'mlflowkit[gpu]'), or run the GPU steps on the 'dask' executor with workers that declare "
    "a 'gpu' resource."
)


@runtime_checkable
class DeviceBackend(Protocol):
    """The device operations the ``gpu`` executor needs (CuPy by default; a fake in tests).

    Device numbers are ``0 .. device_count() - 1``. "Device values" are the arrays that live on
    a device; everything else is a host value.
    """

    def device_count(self) -> int:
        """Number of visible devices."""
        ...

    def total_memory(self, device: int) -> int:
        """Bytes of memory on ``device``."""
        ...

    def device_context(self, device: int) -> AbstractContextManager[object]:
        """A context in which new device values are made on ``device`` (this thread only)."""
        ...

    def is_device_value(self, value: object) -> bool:
        """Whether ``value`` is a device array."""
        ...

    def device_of(self, value: Any) -> int:
        """The device a device value lives on."""
        ...

    def to_device(self, value: Any, device: int) -> Any:
        """A copy of ``value`` (a host array, or a device array elsewhere) on ``device``."""
        ...

    def to_host(self, value: Any, *, after: object = None, background: bool = False) -> Any:
        """A host (NumPy) copy of the device value ``value``.

        ``background=True``: a copy for the store, made by a writer thread (pinned memory and a
        stream of its own, ordered after ``after``, an event from :meth:`record_event`).
        """
        ...

    def record_event(self) -> object:
        """A marker of the work queued so far by this thread (a CUDA event), or None."""
        ...


class CupyBackend:
    """:class:`DeviceBackend` on CuPy.

    Raises
    ------
    ExecutorError
        CuPy cannot be imported, or it finds no CUDA device.
    """

    name = "cupy"

    def __init__(self) -> None:
        try:
            import cupy
        except ImportError as exc:
            raise ExecutorError(
                f"The 'gpu' executor needs CuPy and a CUDA device: looked for the cupy module, "
                f"but it could not be imported ({exc}). {_FIX}",
                executor="gpu",
            ) from exc
        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
        except (RuntimeError, OSError, ImportError) as exc:
            raise ExecutorError(
                f"The 'gpu' executor needs a CUDA device: CuPy is installed, but "
                f"cupy.cuda.runtime.getDeviceCount() failed ({type(exc).__name__}: {exc}); "
                f"is there an NVIDIA driver? {_FIX}",
                executor="gpu",
            ) from exc
        if count < 1:
            raise ExecutorError(
                f"The 'gpu' executor needs a CUDA device: CuPy is installed, but "
                f"cupy.cuda.runtime.getDeviceCount() found none. {_FIX}",
                executor="gpu",
            )
        self._cupy: Any = cupy
        self._count = count
        self._local = threading.local()

    def device_count(self) -> int:
        """Number of visible CUDA devices."""
        return self._count

    def total_memory(self, device: int) -> int:
        """Bytes of memory on ``device``."""
        return int(self._cupy.cuda.Device(device).mem_info[1])

    def device_context(self, device: int) -> AbstractContextManager[object]:
        """``cupy.cuda.Device(device)``."""
        context: AbstractContextManager[object] = self._cupy.cuda.Device(device)
        return context

    def is_device_value(self, value: object) -> bool:
        """Whether ``value`` is a ``cupy.ndarray``."""
        return isinstance(value, self._cupy.ndarray)

    def device_of(self, value: Any) -> int:
        """``value.device.id``."""
        return int(value.device.id)

    def to_device(self, value: Any, device: int) -> Any:
        """Copy a NumPy array host to device, or a CuPy array device to device (peer copy)."""
        cupy = self._cupy
        with cupy.cuda.Device(device):
            if isinstance(value, cupy.ndarray):
                return cupy.copy(value)  # allocates on the current device, copies across
            return cupy.asarray(value)

    def to_host(self, value: Any, *, after: object = None, background: bool = False) -> Any:
        """``cupy.asnumpy(value)``; for the store, into pinned memory on a stream of its own."""
        cupy = self._cupy
        if not background or value.nbytes == 0:
            return cupy.asnumpy(value)
        device = int(value.device.id)
        with cupy.cuda.Device(device):
            stream = self._stream(device)
            with stream:
                if after is not None:
                    stream.wait_event(after)
                src = cupy.ascontiguousarray(value)
                memory = cupy.cuda.alloc_pinned_memory(src.nbytes)
                out = np.frombuffer(memory, src.dtype, src.size).reshape(src.shape)
                src.get(stream=stream, out=out)
                stream.synchronize()
        return out

    def record_event(self) -> object:
        """An event recorded on this thread's current stream."""
        return self._cupy.cuda.get_current_stream().record()

    def _stream(self, device: int) -> Any:
        streams: dict[int, Any] | None = getattr(self._local, "streams", None)
        if streams is None:
            streams = self._local.streams = {}
        if device not in streams:
            streams[device] = self._cupy.cuda.Stream(non_blocking=True)
        return streams[device]


@dataclass(frozen=True)
class _Write:
    """One pending background write."""

    task: Task
    store: ArtifactStore
    output: Any
    digest: str
    meta: dict[str, Any]
    device: int
    event: object
    nbytes: int


@dataclass(frozen=True)
class _Failure:
    """A background write that failed."""

    step: str
    digest: str
    error: BaseException
    traceback: str


def _is_derived(task: Task) -> bool:
    return any(task.step is op for op in _OPS.values())


def _inputs(template: Any) -> Iterator[Input]:
    """The ``Input``\\ s of an argument template, also those inside ``Derived`` views."""
    for item in leaves(template, Input):
        yield item
        if isinstance(item.handle, Derived):
            yield from _inputs(item.handle.args)


def _nbytes(value: Any) -> int:
    return int(getattr(value, "nbytes", 0))


def _failed(task: Task, exc: BaseException) -> TaskResult:
    return TaskResult(task.name, False, attempts=0, error=exc, traceback=traceback.format_exc())


class GpuExecutor(Executor):
    """Run GPU steps on CUDA devices and the other steps on CPU threads; see the module doc.

    Parameters
    ----------
    devices:
        The device numbers to use; ``None`` for every visible device.
    max_workers:
        Threads for the steps that ask for no GPU (default: the CPU count + 4, at most 32).
    backend:
        The device operations (:class:`DeviceBackend`); ``None`` for :class:`CupyBackend`.
    max_pending_bytes:
        Device bytes that pending background writes may hold before finished steps wait for
        them; ``None`` for a quarter of the smallest device's memory.
    verify_writes:
        Re-hash an output on the device after its copy for the store, so that a value modified
        in place in the meantime is never stored under the wrong digest.

    Raises
    ------
    ExecutorError
        CuPy is missing, there is no CUDA device, or ``devices`` names devices that do not
        exist.
    """

    name = "gpu"

    def __init__(
        self,
        devices: list[int] | None = None,
        max_workers: int | None = None,
        *,
        backend: DeviceBackend | None = None,
        max_pending_bytes: int | None = None,
        verify_writes: bool = True,
    ) -> None:
        self.backend: DeviceBackend = backend if backend is not None else CupyBackend()
        count = self.backend.device_count()
        if count < 1:
            raise ExecutorError(
                f"The 'gpu' executor needs a CUDA device; its backend found none. {_FIX}",
                executor="gpu",
            )
        if devices is None:
            chosen = list(range(count))
        else:
            chosen = list(devices)
            bad = [
                d
                for d in chosen
                if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < count
            ]
            if not chosen or bad or len(set(chosen)) != len(chosen):
                raise ExecutorError(
                    f"devices= expected distinct device numbers in 0..{count - 1} ({count} "
                    f"visible), found {devices!r}. Pass a subset of {list(range(count))}, or "
                    f"None for all of them.",
                    executor="gpu",
                )
        self.devices: tuple[int, ...] = tuple(chosen)
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self.capabilities = Capabilities(
            shares_memory=True, gpus=len(self.devices), parallel=True, ordered=True
        )
        if max_pending_bytes is None:
            max_pending_bytes = min(self.backend.total_memory(d) for d in self.devices) // 4
        self.max_pending_bytes = max_pending_bytes
        self.verify_writes = verify_writes

        self._store: ArtifactStore | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # pending writes went down
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._cpu: ThreadPoolExecutor | None = None
        self._workers: dict[int, ThreadPoolExecutor] = {}
        self._writers: dict[int, ThreadPoolExecutor] = {}
        self._queued = dict.fromkeys(self.devices, 0)
        self._turn = itertools.count()
        self._pending_writes = 0
        self._pending_bytes = 0
        self._failures: list[_Failure] = []
        self._reported = 0
        # (source key, target) -> (source kept alive, converted value)
        self._moved: dict[tuple[Any, int], tuple[Any, Any]] = {}

    # --- the executor contract ----------------------------------------------------------------
    def start(self, store: ArtifactStore) -> None:
        """Wait for the previous run's writes (raising a failed one), then get ready.

        Raises
        ------
        StoreError
            A background write of an earlier run failed and was not reported yet.
        """
        self.wait()
        self._store = store
        self._ensure_pools()

    def submit(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        """Queue ``task`` on a device worker (GPU steps) or on the CPU threads.

        Raises
        ------
        StoreError
            A background write failed: the run must not go on as if its output were stored.
        ExecutorError
            The step asks for more than one GPU.
        """
        self._raise_failures()
        wanted = task.step.hints.gpus
        if wanted > 1:
            raise ExecutorError(
                f"Step {task.name!r} asks for resources={dict(task.step.hints.resources)}, but "
                f"the 'gpu' executor places a step on one device. Ask for {{'gpu': 1}} and use "
                f"more devices inside the step (with cupy.cuda.Device(i)), or run it on a Dask "
                f"cluster whose workers declare that many 'gpu' resources.",
                executor=self.name,
                step=task.name,
            )
        cpu, workers = self._ensure_pools()
        if wanted > 0:
            device = self._place(task)
            try:
                future = workers[device].submit(self._run_gpu, task, on_done, device)
            except BaseException:
                self._unqueue(device)
                raise
            future.add_done_callback(lambda _: self._unqueue(device))
        else:
            cpu.submit(self._run_cpu, task, on_done)

    def fetch(self, handle: Any) -> Any:
        """The value behind ``handle`` (device values stay device values)."""
        if isinstance(handle, (InMemory, Stored, Derived)):
            return local_resolver(self._store)(handle)
        raise TypeError(f"{type(self).__name__} cannot fetch {handle!r}")

    def describe(self) -> str:
        """E.g. ``gpu (devices [0, 1], 20 CPU threads)``."""
        return f"gpu (devices {list(self.devices)}, {self.max_workers} CPU threads)"

    def wait(self) -> None:
        """Block until every pending background write is done.

        Raises
        ------
        StoreError
            A background write failed (each failure is raised once).
        """
        with self._changed:
            while self._pending_writes:
                self._changed.wait()
            self._moved.clear()
        self._raise_failures()

    def shutdown(self) -> None:
        """Finish the tasks in flight and every pending write, then stop all threads.

        Raises
        ------
        StoreError
            A background write failed and was not reported yet.
        """
        with self._lock:
            pools = list(self._workers.values())
            if self._cpu is not None:
                pools.append(self._cpu)
            self._workers = {}
            self._cpu = None
        for pool in pools:
            pool.shutdown(wait=True)  # tasks in flight may still queue writes
        with self._changed:
            while self._pending_writes:
                self._changed.wait()
            writers = list(self._writers.values())
            self._writers = {}
            self._moved.clear()
        for pool in writers:
            pool.shutdown(wait=True)
        self._raise_failures()

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the transfer and write counters (see the module docstring)."""
        with self._lock:
            return dict(self._stats)

    # --- placement ----------------------------------------------------------------------------
    def _ensure_pools(self) -> tuple[ThreadPoolExecutor, dict[int, ThreadPoolExecutor]]:
        """The CPU pool and the device workers, started if needed."""
        with self._lock:
            if self._cpu is None:
                self._cpu = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mlflowkit")
            for device in self.devices:
                if device not in self._workers:
                    self._workers[device] = ThreadPoolExecutor(
                        1, thread_name_prefix=f"mlflowkit-gpu{device}"
                    )
            return self._cpu, dict(self._workers)

    def _place(self, task: Task) -> int:
        """The device holding most input bytes, else the least busy one (see module doc)."""
        weights: dict[int, int] = {}
        for item in _inputs(task.args):
            if isinstance(item.handle, InMemory):
                for leaf in self._device_leaves(item.handle.value):
                    device = self.backend.device_of(leaf)
                    if device in self._queued:
                        weights[device] = weights.get(device, 0) + _nbytes(leaf)
        with self._lock:
            if weights:
                device = max(weights, key=lambda d: (weights[d], -self._queued[d]))
            else:
                least = min(self._queued.values())
                idle = [d for d in self.devices if self._queued[d] == least]
                device = idle[next(self._turn) % len(idle)]
            self._queued[device] += 1
        return device

    def _unqueue(self, device: int) -> None:
        with self._lock:
            self._queued[device] -= 1

    # --- running ------------------------------------------------------------------------------
    def _run_gpu(self, task: Task, on_done: Callable[[TaskResult], None], device: int) -> None:
        try:
            with self.backend.device_context(device):
                result = execute(
                    task, self._store, self._resolver(device), write=self._writer(device)
                )
        except Exception as exc:  # a failure of the executor itself: still report once
            result = _failed(task, exc)
        on_done(result)

    def _run_cpu(self, task: Task, on_done: Callable[[TaskResult], None]) -> None:
        try:
            if _is_derived(task):
                device = self._input_device(task)
                context = (
                    self.backend.device_context(device) if device is not None else nullcontext()
                )
                with context:
                    result = execute(
                        task, self._store, self._resolver(_AS_IS), write=self._writer(None)
                    )
            else:
                result = execute(task, self._store, self._resolver(_HOST), write=self._writer(None))
        except Exception as exc:
            result = _failed(task, exc)
        on_done(result)

    def _input_device(self, task: Task) -> int | None:
        for item in _inputs(task.args):
            if isinstance(item.handle, InMemory):
                for leaf in self._device_leaves(item.handle.value):
                    return self.backend.device_of(leaf)
        return None

    # --- moving values ------------------------------------------------------------------------
    def _resolver(self, target: int) -> Callable[[Any], Any]:
        """Turns value handles into values for a step on ``target`` (a device, host, as is)."""
        store = self._store

        def resolve(handle: Any) -> Any:
            if isinstance(handle, InMemory):
                return self._convert(handle.value, target, ("value", id(handle.value)))
            if isinstance(handle, Stored):
                memo = (("stored", handle.digest), target)
                with self._lock:
                    hit = self._moved.get(memo)
                if hit is not None:
                    return hit[1]
                if store is None:
                    raise MlflowkitError(
                        f"value {handle.digest[:12]} is stored but no store is open"
                    )
                return self._convert(store.get(handle.digest), target, ("stored", handle.digest))
            if isinstance(handle, Derived):
                # a view (``parent[i]``): take it from the parent where the parent is, then
                # move only the view itself, never the whole parent
                value = call_step(handle.step, resolve_template(handle.args, as_is))
                return self._convert(value, target, None)
            raise TypeError(f"cannot resolve a value handle of type {type(handle).__name__}")

        as_is = resolve if target == _AS_IS else self._resolver(_AS_IS)
        return resolve

    def _convert(self, value: Any, target: int, source: Any) -> Any:
        """``value`` with its arrays where a step on ``target`` receives them (memoized)."""
        if target == _AS_IS:
            return value
        memo = (source, target)
        if source is not None:
            with self._lock:
                hit = self._moved.get(memo)
            if hit is not None:
                return hit[1]
        moved = self._map_arrays(value, lambda leaf: self._move(leaf, target))
        if source is not None and moved is not value:
            with self._lock:
                self._moved[memo] = (value, moved)
        return moved

    def _move(self, leaf: Any, target: int) -> Any:
        backend = self.backend
        if backend.is_device_value(leaf):
            if target == _HOST:
                out = backend.to_host(leaf)
                self._count("d2h_bytes", _nbytes(leaf))
                return out
            if backend.device_of(leaf) == target:
                return leaf
            out = backend.to_device(leaf, target)
            self._count("d2d_bytes", _nbytes(leaf))
            return out
        if target >= 0 and isinstance(leaf, np.ndarray) and leaf.dtype.kind in _MOVABLE_KINDS:
            out = backend.to_device(leaf, target)
            self._count("h2d_bytes", leaf.nbytes)
            return out
        return leaf

    def _map_arrays(self, value: Any, fn: Callable[[Any], Any]) -> Any:
        """``fn`` applied to the leaves of plain containers; the same object when unchanged."""
        if type(value) in (list, tuple):
            items = [self._map_arrays(v, fn) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items)
        if type(value) is dict:
            mapped = {k: self._map_arrays(v, fn) for k, v in value.items()}
            if all(mapped[k] is v for k, v in value.items()):
                return value
            return mapped
        return fn(value)

    def _device_leaves(self, value: Any) -> Iterator[Any]:
        if type(value) in (list, tuple):
            for item in value:
                yield from self._device_leaves(item)
        elif type(value) is dict:
            for item in value.values():
                yield from self._device_leaves(item)
        elif self.backend.is_device_value(value):
            yield value

    def _count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[key] += amount

    # --- background writes --------------------------------------------------------------------
    def _writer(self, device: int | None) -> Writer:
        """The ``write`` hook of ``stepcall.execute`` for a step run on ``device`` (or a CPU)."""

        def write(task: Task, output: Any, digest: str, meta: dict[str, Any]) -> None:
            store = self._store
            leaves = (
                list(self._device_leaves(output)) if store is not None and task.store_value else []
            )
            if store is None or not leaves:
                _write_output(task, store, output, digest, meta)
                return
            where = device if device is not None else self.backend.device_of(leaves[0])
            job = _Write(
                task,
                store,
                output,
                digest,
                meta,
                where,
                self.backend.record_event(),
                sum(_nbytes(leaf) for leaf in leaves),
            )
            self._enqueue(job)

        return write

    def _enqueue(self, job: _Write) -> None:
        with self._changed:
            while self._pending_writes and (
                self._pending_bytes + job.nbytes > self.max_pending_bytes
            ):
                self._changed.wait()
            self._pending_writes += 1
            self._pending_bytes += job.nbytes
            pool = self._writers.get(job.device)
            if pool is None:
                pool = self._writers[job.device] = ThreadPoolExecutor(
                    1, thread_name_prefix=f"mlflowkit-gpu{job.device}-writer"
                )
        try:
            pool.submit(self._write, job)
        except BaseException:
            self._written(job)
            raise

    def _write(self, job: _Write) -> None:
        try:
            with self.backend.device_context(job.device):
                value = job.output
                if job.store.has(job.digest):
                    self._count("skipped_writes")
                else:
                    value = self._map_arrays(job.output, lambda leaf: self._for_store(leaf, job))
                    if self.verify_writes:
                        self._verify(job)
                _write_output(job.task, job.store, value, job.digest, job.meta)
            self._count("background_writes")
        except Exception as exc:
            failure = _Failure(job.task.name, job.digest, exc, traceback.format_exc())
            with self._lock:
                self._failures.append(failure)
                self._stats["write_failures"] += 1
        finally:
            self._written(job)

    def _for_store(self, leaf: Any, job: _Write) -> Any:
        if not self.backend.is_device_value(leaf):
            return leaf
        out = self.backend.to_host(leaf, after=job.event, background=True)
        nbytes = _nbytes(leaf)
        with self._lock:
            self._stats["d2h_bytes"] += nbytes
            self._stats["background_bytes"] += nbytes
        return out

    @staticmethod
    def _verify(job: _Write) -> None:
        from mlflowkit.hashing import hash_value

        now = hash_value(job.output)
        if now != job.digest:
            raise StoreError(
                f"The output of step {job.task.name!r} changed after the step returned: its "
                f"digest was {job.digest[:12]}, but when it was copied for the store it was "
                f"{now[:12]}, so it was not stored. A later step modified its input in place; "
                f"steps must not modify their inputs (return a new array instead, e.g. x + 1 "
                f"rather than x += 1).",
                digest=job.digest,
            )

    def _written(self, job: _Write) -> None:
        with self._changed:
            self._pending_writes -= 1
            self._pending_bytes -= job.nbytes
            self._changed.notify_all()

    def _raise_failures(self) -> None:
        with self._lock:
            new = self._failures[self._reported :]
            self._reported = len(self._failures)
        if not new:
            return
        first = new[0]
        more = ""
        if len(new) > 1:
            others = ", ".join(repr(f.step) for f in new[1:])
            more = f" {len(new) - 1} more background write(s) failed too: {others}."
        raise StoreError(
            f"The background store write of step {first.step!r} (output {first.digest[:12]}) "
            f"failed: {type(first.error).__name__}: {first.error}. The step's output was "
            f"computed but neither it nor its cache entry was stored; fix the cause (e.g. the "
            f"store's free space or permissions) and run the pipeline again to recompute it."
            f"{more}\n\nTraceback of the write:\n{first.traceback}",
            digest=first.digest,
        ) from first.error
