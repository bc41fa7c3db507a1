"""GPU benchmark: BLAKE3 on the device, and a chain of GPU steps.

Made to be run once on a machine with an NVIDIA GPU (sized for an H200: a few minutes)::

    python benchmarks/gpu.py [--quick] [--tune] [--json results.jsonl]

Without a CUDA device it says so and exits 0. ``--simulate`` runs a tiny smoke test of the same
code paths in Numba's CUDA simulator, on the CPU.

Sections
--------
correctness
    Device digests (``mlflowkit.gpu.blake3``) against the CPU ``blake3`` package, for random
    bytes generated on the device, of 14 sizes up to 1 GiB (four of them one byte off a
    power-of-two number of chunks).
throughput
    Hashing 1 GiB on the device, after a warm-up: the median of several runs, end to end (one
    call, digest copied back) and pipelined (back-to-back hashes between two CUDA events), against
    the device-to-device copy of the same 1 GiB measured in the same process.
tune (``--tune``)
    Pipelined throughput of a few thread-block configurations of the kernels, each with its
    digest checked against the CPU.
ceiling
    The fastest any BLAKE3 kernel of this shape can hash on this device: compression-only
    kernels (mlflowkit's Numba ``compress``, and the same in CUDA C) with no memory traffic
    (``benchmarks/gpu_ceiling.py``).
chain
    Ten GPU steps on 1 GiB arrays through mlflowkit's public API (``mk.step(resources={"gpu":
    1})``, ``mk.pipeline``, ``plan.run(executor="gpu", store=...)``), against the same chain with
    explicit host round trips (``cupy.asnumpy`` + ``cupy.asarray`` between steps) and against a
    plain device-resident chain. Reported as skipped while the GPU executor is not available.

Every measurement is printed in a table and, with ``--json PATH``, written as one JSON object per
line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GiB = 1 << 30
MiB = 1 << 20


class Report:
    """Collects result rows; prints them as tables and writes them as JSON lines."""

    def __init__(self, json_path: str | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self._file = open(json_path, "w", encoding="utf-8") if json_path else None  # noqa: SIM115

    def add(self, section: str, **fields: Any) -> None:
        row = {"section": section, **fields}
        self.rows.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row, sort_keys=True) + "\n")
            self._file.flush()

    def note(self, section: str, message: str) -> None:
        print(f"[{section}] {message}", flush=True)
        self.add(section, note=message)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def print_tables(self) -> None:
        sections: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            sections.setdefault(row["section"], []).append(row)
        for section, rows in sections.items():
            columns: list[str] = []
            for row in rows:
                columns += [k for k in row if k != "section" and k not in columns]
            cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
            widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
            print(f"\n== {section} ==")
            print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
            print("  ".join("-" * w for w in widths))
            for r in cells:
                print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reference(data: Any) -> bytes:
    import blake3

    digest: bytes = blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()
    return digest


# -- simulator smoke run ------------------------------------------------------------------------


def simulate(report: Report) -> int:
    """A few small digests in the CUDA simulator: checks that this script and the kernels run."""
    import numpy as np
    from numba import cuda

    import mlflowkit.gpu as mkgpu

    if not mkgpu.simulated():
        report.note("simulate", "numba was imported before the simulator could be enabled")
        return 1
    rng = np.random.default_rng(0)
    failures = 0
    for n in (0, 1, 1025, 3 * 1024 + 5):
        host = rng.integers(0, 256, n, dtype=np.uint8)
        start = time.perf_counter()
        got = mkgpu.blake3(cuda.to_device(host))
        seconds = time.perf_counter() - start
        ok = got == _reference(host.tobytes())
        failures += not ok
        report.add("correctness", bytes=n, ok=ok, device_s=seconds, simulated=True)
    fortran = np.asfortranarray(rng.standard_normal((6, 5)))
    ok = mkgpu.device_data_digest(cuda.to_device(fortran)) == _reference(fortran.tobytes())
    failures += not ok
    report.add("correctness", bytes=fortran.nbytes, ok=ok, layout="fortran", simulated=True)

    # The private launch path that the throughput section times.
    from mlflowkit.hashing.device import _blake3, _device

    host = rng.integers(0, 256, 5000, dtype=np.uint8)
    prepared = _device.prepare(
        _device.cuda_module(), cuda.to_device(host), allow_copy=False, sim=True
    )
    words = _blake3.launch_digest(prepared.words, prepared.data8, prepared.nbytes)
    ok = bytes(words.copy_to_host()[:8].astype("<u4").tobytes()) == _reference(host.tobytes())
    failures += not ok
    report.add("correctness", bytes=host.nbytes, ok=ok, layout="launch_digest", simulated=True)
    report.note("throughput", "skipped: the simulator's timings say nothing about a device")

    ok = _ceiling_module().simulate_check()
    failures += not ok
    report.add("ceiling", kernel="numba (simulated, 8 threads x 2 compressions)", same_as_cpu=ok)

    pipeline, why = _build_chain()
    if pipeline is None:
        report.note("chain", f"skipped: mlflowkit's step/pipeline API not available ({why})")
    else:
        plan = pipeline.plan(size=1024, steps=3)
        report.add("chain", how="planned only (simulator)", steps=len(plan.steps))
    return 1 if failures else 0


def _ceiling_module() -> Any:
    """``benchmarks/gpu_ceiling.py``, whether this file runs as a script or as a module."""
    try:
        from benchmarks import gpu_ceiling
    except ImportError:  # run as ``python benchmarks/gpu.py``: its folder is on the path
        import gpu_ceiling  # type: ignore[no-redef]
    return gpu_ceiling


# -- correctness ---------------------------------------------------------------------------------


def correctness(report: Report, cupy: Any, quick: bool, seed: int) -> int:
    import mlflowkit.gpu as mkgpu

    rng = random.Random(seed)
    top = 64 * MiB if quick else GiB
    sizes = [0, 1, 1025, rng.randrange(MiB), rng.randrange(16 * MiB)]
    # Around the chunk tree's boundaries: a power of two of 1 KiB chunks, one byte off either way.
    sizes += [(1024 << k) + rng.choice((-1, 1)) for k in rng.sample(range(4, 20), 4)]
    sizes += [rng.randrange(top // 8, top) for _ in range(3)] + [top - 1, top]
    failures = 0
    for i, n in enumerate(sizes):
        buf = cupy.random.default_rng(seed + i).integers(0, 256, n, dtype=cupy.uint8)
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        got = mkgpu.blake3(buf)
        device_s = time.perf_counter() - start
        host = cupy.asnumpy(buf)
        start = time.perf_counter()
        want = _reference(host)
        cpu_s = time.perf_counter() - start
        ok = got == want
        failures += not ok
        report.add("correctness", bytes=n, ok=ok, device_s=device_s, cpu_blake3_s=cpu_s)
        del buf, host
    return failures


# -- throughput ----------------------------------------------------------------------------------


def _events_time(cupy: Any, fn: Callable[[], Any], inner: int) -> float:
    """Seconds per ``fn()`` on the GPU timeline: ``inner`` back-to-back calls between events."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    end.synchronize()
    return float(cupy.cuda.get_elapsed_time(start, end)) / 1000.0 / inner


def throughput(report: Report, cupy: Any, size: int, repeats: int, tune: bool) -> None:
    import mlflowkit.gpu as mkgpu
    from mlflowkit.hashing.device import _blake3, _device

    buf = cupy.random.default_rng(1).integers(0, 256, size, dtype=cupy.uint8)
    cuda = _device.cuda_module()
    prepared = _device.prepare(cuda, buf, allow_copy=False, sim=False)

    def pipelined(config: Any) -> Callable[[], Any]:
        return lambda: _blake3.launch_digest(
            prepared.words, prepared.data8, prepared.nbytes, config
        )

    start = time.perf_counter()
    mkgpu.blake3(buf)  # compiles the kernels
    report.add("throughput", what="first call (compiles)", seconds=time.perf_counter() - start)
    mkgpu.blake3(buf)

    end_to_end = _median_time(lambda: mkgpu.blake3(buf), repeats)
    default = pipelined(_blake3.DEFAULT_CONFIG)
    default()
    device = statistics.median(_events_time(cupy, default, 4) for _ in range(repeats))

    dst = cupy.empty_like(buf)
    copy = lambda: cupy.copyto(dst, buf)  # noqa: E731
    copy()
    copy_s = statistics.median(_events_time(cupy, copy, 4) for _ in range(repeats))
    copy_gbs = size / copy_s / 1e9
    for what, seconds in (("hash, end to end", end_to_end), ("hash, pipelined", device)):
        gbs = size / seconds / 1e9
        report.add(
            "throughput",
            what=what,
            bytes=size,
            seconds=seconds,
            GB_per_s=gbs,
            vs_copy=gbs / copy_gbs,
            target_2TBps_met=gbs >= 2000,
        )
    report.add(
        "throughput",
        what="device-to-device copy (reads + writes the bytes once each)",
        bytes=size,
        seconds=copy_s,
        GB_per_s=copy_gbs,
        vs_copy=1.0,
    )

    if tune:
        want = _reference(cupy.asnumpy(buf))
        for chunk_threads in (64, 128, 256):
            for stage_blocks in (1, 2, 4):
                if chunk_threads * (16 * stage_blocks + 10) * 4 > 48 * 1024:
                    continue  # over the static shared-memory limit of a block
                config = _blake3.KernelConfig(chunk_threads, 256, stage_blocks)
                run = pipelined(config)
                got = run().copy_to_host()[:8].astype("<u4").tobytes()
                seconds = statistics.median(_events_time(cupy, run, 4) for _ in range(repeats))
                report.add(
                    "tune",
                    chunk_threads=chunk_threads,
                    stage_blocks=stage_blocks,
                    merge_threads=256,
                    seconds=seconds,
                    GB_per_s=size / seconds / 1e9,
                    vs_copy=size / seconds / 1e9 / copy_gbs,
                    same_digest=got == want,
                    default=config == _blake3.DEFAULT_CONFIG,
                )


# -- a chain of GPU steps ------------------------------------------------------------------------


def make_bytes(size: int, seed: int) -> Any:
    """``size`` random bytes on the device."""
    import cupy

    return cupy.random.default_rng(seed).integers(0, 256, size, dtype=cupy.uint8)


def bump(x: Any, i: int) -> Any:
    """A cheap elementwise step: add a small constant (wrapping) to every byte."""
    return x + (i % 7 + 1)


def _build_chain() -> tuple[Any, str | None]:
    """The chain as an mlflowkit pipeline, or ``(None, why)`` while the API is not there yet."""
    try:
        import mlflowkit as mk

        gpu_step = mk.step(resources={"gpu": 1})
        make_step = gpu_step(make_bytes)
        bump_step = gpu_step(bump)

        def gpu_chain(size: int, steps: int) -> Any:
            x = make_step(size, 0)
            for i in range(steps):
                x = bump_step(x, i)
            return x

        return mk.pipeline(gpu_chain), None
    except (ImportError, AttributeError, TypeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


class TransferCounter:
    """Counts the bytes that go through ``cupy.asnumpy`` (to the host) and ``cupy.asarray`` /
    ``cupy.array`` of host arrays (to the device) while active.

    Copies made by other means (``ndarray.get``/``set``, DLPack, raw memcpy) are not seen, so the
    counts are a lower bound; the size of the store after a run bounds the device-to-host bytes
    of stored outputs from the other side.
    """

    def __init__(self, cupy: Any) -> None:
        self.cupy = cupy
        self.to_host = 0
        self.to_device = 0

    @contextmanager
    def active(self) -> Iterator[TransferCounter]:
        import numpy as np

        cupy = self.cupy
        originals = {name: getattr(cupy, name) for name in ("asnumpy", "asarray", "array")}

        def asnumpy(a: Any, *args: Any, **kwargs: Any) -> Any:
            self.to_host += int(getattr(a, "nbytes", 0))
            return originals["asnumpy"](a, *args, **kwargs)

        def wrap(name: str) -> Callable[..., Any]:
            def to_device(obj: Any, *args: Any, **kwargs: Any) -> Any:
                if isinstance(obj, np.ndarray):
                    self.to_device += obj.nbytes
                return originals[name](obj, *args, **kwargs)

            return to_device

        cupy.asnumpy, cupy.asarray, cupy.array = asnumpy, wrap("asarray"), wrap("array")
        try:
            yield self
        finally:
            for name, fn in originals.items():
                setattr(cupy, name, fn)


def _du(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def chain(report: Report, cupy: Any, size: int, steps: int) -> None:
    sync = cupy.cuda.Device().synchronize

    # Device-resident and host-round-trip chains, without mlflowkit.
    x = make_bytes(size, 0)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        x = bump(x, i)
    sync()
    resident_s = time.perf_counter() - start
    expected = cupy.asnumpy(x[:4096])
    report.add("chain", how="cupy, on the device", steps=steps, bytes=size, seconds=resident_s)

    counter = TransferCounter(cupy)
    x = make_bytes(size, 0)
    sync()
    with counter.active():
        start = time.perf_counter()
        for i in range(steps):
            x = cupy.asarray(cupy.asnumpy(x))
            x = bump(x, i)
        sync()
        round_trip_s = time.perf_counter() - start
    report.add(
        "chain",
        how="cupy, host round trip between steps",
        steps=steps,
        bytes=size,
        seconds=round_trip_s,
        to_host_bytes=counter.to_host,
        to_device_bytes=counter.to_device,
    )
    del x

    try:
        import mlflowkit as mk

        executors = list(mk.executors.available())
    except (ImportError, AttributeError) as exc:
        report.note("chain", f"skipped: gpu executor not available ({exc})")
        return
    if "gpu" not in executors:
        report.note("chain", f"skipped: gpu executor not available (have {executors})")
        return
    pipeline, why = _build_chain()
    if pipeline is None:
        report.note("chain", f"skipped: mlflowkit's step/pipeline API not available ({why})")
        return

    counter = TransferCounter(cupy)
    with tempfile.TemporaryDirectory(prefix="mlflowkit-gpu-bench-") as tmp:
        store = mk.Store(tmp)
        try:
            plan = pipeline.plan(size=size, steps=steps)
            # An executor instance (not the name) so that its counters can be read; the run
            # returns once every step is hashed, while the store writes go on in the background.
            executor = mk.executors.get("gpu")
            try:
                with counter.active():
                    start = time.perf_counter()
                    run = plan.run(executor=executor, store=store, progress=False)
                    sync()
                    run_s = time.perf_counter() - start
                    executor.wait()  # type: ignore[attr-defined]
                    written_s = time.perf_counter() - start
            finally:
                executor.shutdown()
            stats = dict(executor.stats)  # type: ignore[attr-defined]
            out = run.output
            ok = bool((cupy.asnumpy(out[:4096]) == expected).all())
        except mk.MlflowkitError as exc:
            report.note("chain", f"failed: {type(exc).__name__}: {exc}")
            return
        report.add(
            "chain",
            how="mlflowkit, executor='gpu'",
            steps=steps,
            bytes=size,
            seconds=run_s,
            seconds_until_stored=written_s,
            same_output=ok,
            vs_round_trip=run_s / round_trip_s,
            h2d_bytes=stats.get("h2d_bytes"),
            d2h_bytes=stats.get("d2h_bytes"),
            background_writes=stats.get("background_writes"),
            to_host_bytes_seen=counter.to_host,
            to_device_bytes_seen=counter.to_device,
            store_bytes=_du(tmp),
            status=run.status,
        )


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (64 MiB), few repeats")
    parser.add_argument("--simulate", action="store_true", help="tiny smoke run in the simulator")
    parser.add_argument("--tune", action="store_true", help="also time other kernel shapes")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON lines")
    parser.add_argument("--size", type=int, help="bytes per array (default 1 GiB, quick 64 MiB)")
    parser.add_argument("--steps", type=int, default=10, help="steps in the chain (default 10)")
    parser.add_argument("--repeats", type=int, help="timed repetitions (default 10, quick 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sections",
        default="correctness,throughput,ceiling,chain",
        help="comma-separated sections to run (default: all)",
    )
    args = parser.parse_args(argv)

    if args.simulate:
        if "numba" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            print("--simulate must be set before numba is imported", file=sys.stderr)
            return 2
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

    report = Report(args.json)
    try:
        if args.simulate:
            status = simulate(report)
            report.print_tables()
            return status

        import mlflowkit.gpu as mkgpu

        if not mkgpu.available():
            print(
                "No CUDA device found (or Numba's CUDA target is not installed): nothing to "
                "benchmark. Run this on a GPU machine, or pass --simulate for a smoke test in "
                "the CUDA simulator."
            )
            report.add("setup", note="no CUDA device")
            return 0
        try:
            import cupy
        except ImportError:
            print("CuPy is not installed: pip install 'mlflowkit[gpu]'. Nothing to benchmark.")
            report.add("setup", note="no CuPy")
            return 0

        size = args.size or (64 * MiB if args.quick else GiB)
        repeats = args.repeats or (3 if args.quick else 10)
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        report.add(
            "setup",
            device=name,
            memory_GiB=round(props["totalGlobalMem"] / GiB, 1),
            size=size,
            repeats=repeats,
        )
        print(f"device: {name}; {size} bytes per array; {repeats} repeats", flush=True)

        sections = set(args.sections.split(","))
        started = time.perf_counter()
        failures = 0
        if "correctness" in sections:
            failures = correctness(report, cupy, args.quick, args.seed)
            print(f"correctness: {failures} failure(s)", flush=True)
        if "throughput" in sections:
            throughput(report, cupy, size, repeats, args.tune)
            print("throughput: done", flush=True)
        if "ceiling" in sections:
            _ceiling_module().ceiling(report, cupy, repeats)
            failures += sum(row.get("same_as_cpu") is False for row in report.rows)
            print("ceiling: done", flush=True)
        if "chain" in sections:
            chain(report, cupy, size, args.steps)
        report.add("setup", total_s=time.perf_counter() - started)
        report.print_tables()
        return 1 if failures else 0
    finally:
        report.close()


if __name__ == "__main__":
    raise SystemExit(main())
