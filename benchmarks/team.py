"""``python -m benchmarks.team``: what each store seam costs, side by side.

Three stores, the same two workloads, mlflowkit called as the docs show it:

* ``local + SQLite`` — a folder, its SQLite index inside (the default);
* ``S3 + SQLite`` — an S3 bucket on an S3-protocol server on 127.0.0.1 (moto's server mode),
  the SQLite index in a local cache folder;
* ``S3 + PostgreSQL`` — the same bucket, the index in a PostgreSQL server on 127.0.0.1.

Workloads: a chain of 1000 steps with every output persisted (µs per step, run call and
output), and a fully cached re-run of a 200-step chain in a fresh process (µs per step, the run
call; the store was filled by another fresh process). Both servers are started here (from the
test suite's ``tests/servers.py``) and stopped at the end; loopback makes the network nearly
free, so what shows is each seam's own cost (requests, serialization, transactions).

Examples::

    python -m benchmarks.team                       # a few minutes on 2 cores
    python -m benchmarks.team --quick               # smaller sizes, one repetition
    python -m benchmarks.team --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.core import REPO_ROOT
from benchmarks.fresh import run_child
from benchmarks.report import replace_marked

__all__ = ["child_rerun", "main"]

BEGIN = "<!-- BEGIN TEAM STORES (python -m benchmarks.team --markdown ...) -->"
END = "<!-- END TEAM STORES -->"
COMBOS = ("local + SQLite", "S3 + SQLite", "S3 + PostgreSQL")


def child_rerun(url: str, index: str | None, n: int, mode: str) -> dict[str, float]:
    """In a fresh process: run the ``n``-step chain; in ``measure`` mode all must be hits."""
    import mlflowkit as mk
    from benchmarks.workloads import mk_pipelines

    store = mk.Store(url, index=index)
    t0 = time.perf_counter()
    run = mk_pipelines.chain.plan(n=n, start=0).run(store=store)
    out = run.output
    seconds = time.perf_counter() - t0
    if out != n:
        raise RuntimeError(f"computed {out!r}, expected {n}")
    if mode == "measure" and any(s.status != "cached" for s in run.steps):
        raise RuntimeError("expected every step to be a cache hit")
    return {"seconds": seconds}


def _chain(url: str, index: str | None, n: int, start: int) -> float:
    import mlflowkit as mk
    from benchmarks.workloads import mk_pipelines

    t0 = time.perf_counter()
    run = mk_pipelines.chain.plan(n=n, start=start).run(store=mk.Store(url, index=index))
    out = run.output
    seconds = time.perf_counter() - t0
    if out != start + n:
        raise RuntimeError(f"computed {out!r}, expected {start + n}")
    return seconds


def measure(chain_n: int, rerun_n: int, reps: int) -> dict[str, dict[str, float]]:
    """``{combo: {"chain_us": ..., "rerun_us": ...}}`` (medians over ``reps``)."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.servers import start_postgres, start_s3

    work = Path(tempfile.mkdtemp(prefix="mk-team-bench-"))
    results: dict[str, dict[str, float]] = {}
    with start_s3() as s3, start_postgres() as pg:
        os.environ.update(s3.env())
        os.environ["MLFLOWKIT_CACHE_DIR"] = str(work / "cache")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        s3.filesystem().mkdir(bucket)

        def where(combo: str, tag: str) -> tuple[str, str | None]:
            if combo == "local + SQLite":
                return str(work / tag), None
            index = pg.url() if combo == "S3 + PostgreSQL" else None
            return f"s3://{bucket}/{tag}", index

        starts = iter(range(1_000_000, 10**9, 1_000_000))
        for combo in COMBOS:
            chain_s, rerun_s = [], []
            for rep in range(reps):
                url, index = where(combo, f"chain-{combo[:2]}-{rep}")
                chain_s.append(_chain(url, index, chain_n, next(starts)))
                url, index = where(combo, f"rerun-{combo[:2]}-{rep}")
                args = {"url": url, "index": index, "n": rerun_n}
                run_child("benchmarks.team:child_rerun", {**args, "mode": "fill"}, 300)
                got = run_child("benchmarks.team:child_rerun", {**args, "mode": "measure"}, 300)
                rerun_s.append(got["seconds"])
            results[combo] = {
                "chain_us": statistics.median(chain_s) / chain_n * 1e6,
                "rerun_us": statistics.median(rerun_s) / rerun_n * 1e6,
            }
            print(
                f"{combo:16s} chain {results[combo]['chain_us']:8.1f} µs/step   "
                f"cached re-run {results[combo]['rerun_us']:8.1f} µs/step",
                flush=True,
            )
    shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: dict[str, dict[str, float]], chain_n: int, rerun_n: int) -> str:
    base = results.get("local + SQLite", {})
    lines = [
        f"| store | {chain_n}-step persisted chain, µs/step | vs local | "
        f"{rerun_n}-step cached re-run (fresh process), µs/step | vs local |",
        "|---|---|---|---|---|",
    ]
    for combo, r in results.items():
        ratio_c = r["chain_us"] / base["chain_us"] if base else float("nan")
        ratio_r = r["rerun_us"] / base["rerun_us"] if base else float("nan")
        lines.append(
            f"| {combo} | {r['chain_us']:.0f} | {ratio_c:.2f} | {r['rerun_us']:.1f} | "
            f"{ratio_r:.2f} |"
        )
    return "\n".join(lines)


def update_markdown(path: str, section: str) -> None:
    """Replace the team-stores section of ``path`` (between the markers) with ``section``."""
    replace_marked(path, BEGIN, END, section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.team", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="100 / 50 steps, one repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median)")
    parser.add_argument("--markdown", metavar="PATH", help="regenerate the team-stores section")
    args = parser.parse_args(argv)
    chain_n, rerun_n, reps = (100, 50, 1) if args.quick else (1000, 200, args.reps)
    results = measure(chain_n, rerun_n, reps)
    text = table(results, chain_n, rerun_n)
    print()
    print(text)
    if args.markdown:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        update_markdown(
            args.markdown,
            f"Generated by `python -m benchmarks.team` on {when} ({os.cpu_count()} cores; "
            f"servers on 127.0.0.1; median of {reps}).\n\n{text}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
