"""``python -m benchmarks.scale``: how mlflowkit's cost grows with the work.

Scale curves, mlflowkit only, each point measured in a fresh process (so the process's peak
memory is that point's alone):

* ``chain`` — a chain of n trivial steps, orchestration only (``cache=False`` steps, as in
  workload A), planning included;
* ``map, threads`` / ``map, dask`` — one step mapped over n elements and a reduce, on the
  ``threads`` executor (as many workers as cores) and on the ``dask`` executor against a
  ``LocalCluster`` of 2 worker processes started in that process before anything is measured;
* ``cached re-run`` — a chain of n cached steps, run once to fill a fresh store, then again
  in another fresh process where every step is a cache hit (what is timed).

For each point: the time per step (``plan(...).run(...)`` and reading the output), and the
driver's memory per step — the rise of the process's peak resident memory during the run,
over n. Before the measured run, the process runs the same pipeline once with 10 steps into
another store, so that what a process pays once (lazy imports, starting the pool, code
digests) is not spread over the n steps. Dask's worker processes are not the driver and are
not counted. mlflowkit is called as the README shows it (default arguments, a store in a fresh
folder).

Examples::

    python -m benchmarks.scale                      # 1k, 10k and 100k (a few minutes on 2 cores)
    python -m benchmarks.scale --quick              # 100 and 1000, a smoke run
    python -m benchmarks.scale --markdown docs/benchmarks.md --chart docs/assets/scale.png

The goal (issue "performance, round 2"): flat time per step, at most 2 KB of driver memory per
step at 100k, and no ``RecursionError`` anywhere.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.core import TimedOut
from benchmarks.fresh import peak_rss_bytes, run_child
from benchmarks.report import replace_marked

__all__ = ["CURVES", "Point", "child", "main", "parse_curves"]

#: curve name -> whether it needs Dask (distributed)
CURVES = {
    "chain": False,
    "map, threads": False,
    "map, dask": True,
    "cached re-run": False,
}
#: the goal at the largest size
MEMORY_GOAL_BYTES = 2048
#: steps of the run that warms a process up before the measured one
WARM_UP_STEPS = 10
BEGIN = "<!-- BEGIN SCALE CURVES (python -m benchmarks.scale --markdown ...) -->"
END = "<!-- END SCALE CURVES -->"


@dataclass(frozen=True)
class Point:
    """One measured point of a curve."""

    curve: str
    n: int
    seconds: float
    us_per_step: float
    driver_bytes_per_step: float
    status: str = "ok"
    error: str = ""


def _current_rss() -> int:
    """The resident memory of this process now, in bytes (Linux; else the peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def child(curve: str, n: int, folder: str, mode: str = "measure") -> dict[str, float]:
    """Run one point in this (fresh) process; ``seconds`` and the peak-memory rise."""
    import mlflowkit as mk
    from benchmarks.workloads import mk_pipelines

    cluster = client = None
    executor: Any = "local"
    if curve == "map, threads":
        executor = mk.executors.get("threads", max_workers=os.cpu_count() or 1)
    elif curve == "map, dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
        executor = mk.executors.get("dask", address=cluster.scheduler_address)
    store = os.path.join(folder, "store")
    try:
        if curve == "chain":
            plan_it = lambda k: mk_pipelines.chain_volatile.plan(n=k, start=0)  # noqa: E731
            want = n
        elif curve.startswith("map"):
            plan_it = lambda k: mk_pipelines.fan.plan(n=k)  # noqa: E731
            want = sum(i * i for i in range(n))
        elif curve == "cached re-run":
            plan_it = lambda k: mk_pipelines.chain.plan(n=k, start=0)  # noqa: E731
            want = n
        else:
            raise ValueError(f"unknown curve {curve!r}")
        # What a process pays once (lazy imports, the pool or client, code digests) is paid
        # by a small run into another store first: the point measures what the n steps cost.
        plan_it(WARM_UP_STEPS).run(executor=executor, store=os.path.join(folder, "warm-up"))
        gc.collect()
        before = _current_rss()
        t0 = time.perf_counter()
        run = plan_it(n).run(executor=executor, store=store)
        out = run.output
        seconds = time.perf_counter() - t0
        peak = peak_rss_bytes()
        if out != want:
            raise RuntimeError(f"{curve}: computed {out!r}, expected {want!r}")
        if curve == "cached re-run" and mode == "measure":
            hits = sum(s.status == "cached" for s in run.steps)
            if hits != n:
                raise RuntimeError(f"expected {n} cache hits, found {hits}")
        return {"seconds": seconds, "peak_rise": float(max(0, peak - before))}
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def measure(curve: str, n: int, reps: int, timeout: float) -> Point:
    """The median of ``reps`` fresh-process runs of one point (a failure is reported as such)."""
    folder = tempfile.mkdtemp(prefix="mk-scale-")
    target = "benchmarks.scale:child"
    try:
        if curve == "cached re-run":
            run_child(target, {"curve": curve, "n": n, "folder": folder, "mode": "fill"}, timeout)
        results = [
            run_child(target, {"curve": curve, "n": n, "folder": folder}, timeout)
            for _ in range(reps)
        ]
    except TimedOut as exc:
        return Point(curve, n, float("nan"), float("nan"), float("nan"), "timeout", str(exc))
    except RuntimeError as exc:
        return Point(curve, n, float("nan"), float("nan"), float("nan"), "error", str(exc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = statistics.median(r["seconds"] for r in results)
    rise = statistics.median(r["peak_rise"] for r in results)
    return Point(curve, n, seconds, seconds / n * 1e6, rise / n)


def table(points: list[Point]) -> str:
    """The points as a Markdown table (one row per curve, one column pair per size)."""
    sizes = sorted({p.n for p in points})
    head = "| curve | " + " | ".join(f"{_size(n)}: µs/step · B/step" for n in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for curve in CURVES:
        cells = []
        for n in sizes:
            found = [p for p in points if p.curve == curve and p.n == n]
            if not found:
                cells.append("—")
            elif found[0].status != "ok":
                cells.append(f"{found[0].status}: {found[0].error[:60]}")
            else:
                p = found[0]
                cells.append(f"{p.us_per_step:.1f} · {p.driver_bytes_per_step:,.0f}")
        if any(c != "—" for c in cells):
            lines.append(f"| {curve} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(points: list[Point]) -> str:
    """Whether the goal holds at the largest size measured."""
    top = max((p.n for p in points), default=0)
    at_top = [p for p in points if p.n == top]
    failed = [p for p in points if p.status != "ok"]
    heavy = [p for p in at_top if p.status == "ok" and p.driver_bytes_per_step > MEMORY_GOAL_BYTES]
    parts = [
        f"at {_size(top)} steps, driver memory per step ≤ {MEMORY_GOAL_BYTES} B: "
        + ("met" if not heavy else "MISSED by " + ", ".join(p.curve for p in heavy))
    ]
    if failed:
        parts.append("failed points: " + ", ".join(f"{p.curve} at {_size(p.n)}" for p in failed))
    else:
        parts.append("no point failed (no RecursionError, no time-out)")
    return "; ".join(parts) + "."


def chart(points: list[Point], path: str) -> None:
    """Two panels, time and driver memory per step against n (log scale), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for curve in CURVES:
        ok = sorted((p for p in points if p.curve == curve and p.status == "ok"), key=lambda p: p.n)
        if not ok:
            continue
        xs = [p.n for p in ok]
        left.plot(xs, [p.us_per_step for p in ok], marker="o", label=curve)
        right.plot(xs, [p.driver_bytes_per_step for p in ok], marker="o", label=curve)
    right.axhline(MEMORY_GOAL_BYTES, color="grey", linestyle="--", linewidth=1, label="goal")
    for ax, title, unit in (
        (left, "time per step", "µs"),
        (right, "driver memory per step", "bytes"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("steps (n)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle("mlflowkit scale curves (each point a fresh process)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def update_markdown(path: str, section: str) -> None:
    """Replace the scale section of ``path`` (between the markers) with ``section``."""
    replace_marked(path, BEGIN, END, section)


def parse_curves(text: str) -> list[str]:
    """The curve names in ``--curves``: separated by commas, where a comma followed by a space
    is part of a name (``"chain,map, threads"`` is ``chain`` and ``map, threads``)."""
    return re.split(r",(?! )", text)


def _size(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 1000, one repetition")
    parser.add_argument("--sizes", help="comma-separated sizes (default 1000,10000,100000)")
    parser.add_argument(
        "--curves", help="comma-separated curves, e.g. 'chain,map, threads' (default: all)"
    )
    parser.add_argument("--reps", type=int, default=1, help="fresh processes per point (median)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    parser.add_argument("--json", metavar="PATH", help="write the points as JSON lines")
    parser.add_argument("--markdown", metavar="PATH", help="regenerate the scale section")
    parser.add_argument("--chart", metavar="PATH", help="write the chart (PNG)")
    parser.add_argument(
        "--from-json", metavar="PATH", help="measure nothing: report the points of --json PATH"
    )
    args = parser.parse_args(argv)

    sizes = [100, 1000] if args.quick else [1000, 10_000, 100_000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    curves = list(CURVES) if not args.curves else parse_curves(args.curves)
    unknown = [c for c in curves if c not in CURVES]
    if unknown:
        parser.error(f"unknown curve(s) {unknown}; choose from {list(CURVES)}")
    from importlib.util import find_spec

    if find_spec("distributed") is None and "map, dask" in curves:
        print("distributed is not installed: skipping 'map, dask' (pip install 'mlflowkit[dask]')")
        curves.remove("map, dask")

    points: list[Point] = []
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            points = [Point(**json.loads(line)) for line in f if line.strip()]
        curves = []
    for curve in curves:
        for n in sizes:
            started = time.perf_counter()
            point = measure(curve, n, args.reps, args.timeout)
            points.append(point)
            shown = (
                f"{point.us_per_step:8.1f} µs/step {point.driver_bytes_per_step:10,.0f} B/step"
                if point.status == "ok"
                else f"{point.status}: {point.error}"
            )
            took = time.perf_counter() - started
            print(f"{curve:14s} {_size(n):>5s}  {shown}  ({took:.0f} s)", flush=True)
    print()
    print(table(points))
    print()
    print(verdict(points))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            for p in points:
                f.write(json.dumps(asdict(p)) + "\n")
    if args.chart:
        chart(points, args.chart)
    if args.markdown:
        image = ""
        if args.chart:
            rel = os.path.relpath(args.chart, os.path.dirname(os.path.abspath(args.markdown)))
            image = f"![mlflowkit scale curves]({rel})\n\n"
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        section = (
            f"Generated by `python -m benchmarks.scale` on {when} ({os.cpu_count()} cores); "
            "µs per step and driver bytes per step, each point a fresh process"
            + (f" (the median of {args.reps})" if args.reps > 1 else "")
            + ".\n\n"
            f"{image}{table(points)}\n\n{verdict(points)}"
        )
        update_markdown(args.markdown, section)
    return 0 if all(p.status == "ok" for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())
