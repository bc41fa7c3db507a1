"""``python -m benchmarks``: run the workloads for mlflowkit and each installed peer.

Examples::

    python -m benchmarks                          # everything (about 15-20 minutes on 2 cores)
    python -m benchmarks --quick                  # smoke run, under a minute or two
    python -m benchmarks --only A,hash --tools mlflowkit,joblib
    python -m benchmarks --json results.jsonl --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace

from benchmarks import machine
from benchmarks.core import Case, Config, Group, Row
from benchmarks.engine import WorkerPool, run_group
from benchmarks.report import markdown_section, text_report, update_markdown, write_json_lines
from benchmarks.workloads import WORKLOADS

__all__ = ["main"]

#: worker keys that belong to one group (the others are tool families, kept between groups)
_GROUP_KEYS = ("group-", "fixture-")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Side-by-side benchmarks of mlflowkit and its peers (Dask, Hamilton, "
        "Prefect, redun, joblib). Tools run round-robin in every repetition, after a warm-up.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small sizes, one repetition"
    )
    parser.add_argument(
        "--only",
        metavar="WORKLOAD[,..]",
        help="workloads by letter or name: "
        + ", ".join(f"{k}={name}" for k, (name, _) in WORKLOADS.items()),
    )
    parser.add_argument(
        "--tools",
        metavar="TOOL[,..]",
        help="tools by family or name prefix, e.g. mlflowkit,joblib,dask "
        "(yardsticks such as memory bandwidth are always shown)",
    )
    parser.add_argument("--reps", type=int, help="repetitions per tool (default 5, quick 1)")
    parser.add_argument("--json", metavar="PATH", help="write JSON lines (one per measurement)")
    parser.add_argument(
        "--markdown", metavar="PATH", help="regenerate the results section of this page"
    )
    parser.add_argument("--list", action="store_true", help="list workloads and tools, then exit")
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the session folder (caches, stores, worker logs) and print where it is",
    )
    return parser


def _split(text: str | None) -> list[str]:
    return [t.strip().lower() for t in (text or "").split(",") if t.strip()]


def select_workloads(only: str | None) -> list[str]:
    """Workload letters selected by ``--only`` (all when empty)."""
    wanted = _split(only)
    if not wanted:
        return list(WORKLOADS)
    letters = []
    for item in wanted:
        match = [k for k, (name, _) in WORKLOADS.items() if item in (k.lower(), name)]
        if not match:
            known = ", ".join(f"{k} ({name})" for k, (name, _) in WORKLOADS.items())
            raise SystemExit(f"unknown workload {item!r}; expected one of {known}")
        letters += match
    return [k for k in WORKLOADS if k in letters]


def tool_selected(case: Case, tools: list[str]) -> bool:
    """Whether ``--tools`` keeps ``case`` (yardsticks are always kept)."""
    if not tools or case.kind == "reference":
        return True
    name = case.tool.lower()
    return any(t in (case.family.lower(), name) or name.startswith(t) for t in tools)


def build_groups(
    cfg: Config, letters: list[str], tools: list[str]
) -> list[tuple[Group, list[Case]]]:
    """The groups to run and the selected cases of each (groups without a tool are dropped)."""
    out = []
    for letter in letters:
        for group in WORKLOADS[letter][1].groups(cfg):
            cases = [c for c in group.cases if tool_selected(c, tools)]
            if any(c.kind != "reference" for c in cases):
                out.append((group, cases))
    return out


def _command(args: argparse.Namespace) -> str:
    parts = ["python -m benchmarks"]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts.append(f"--only {args.only}")
    if args.tools:
        parts.append(f"--tools {args.tools}")
    if args.reps:
        parts.append(f"--reps {args.reps}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; print the table; write JSON lines and markdown if asked."""
    args = _parser().parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="mlflowkit-bench-")
    cfg = Config.quick_run(workdir) if args.quick else Config.full(workdir)
    if args.reps:
        cfg = replace(cfg, reps=args.reps)
    letters = select_workloads(args.only)
    tools = _split(args.tools)
    plan = build_groups(cfg, letters, tools)
    if cfg.quick and not tools:
        # Prefect starts a server in every fresh process: that alone outlasts a smoke run
        plan = [
            (group, kept)
            for group, cases in plan
            if (kept := [c for c in cases if c.family != "prefect"])
            and any(c.kind != "reference" for c in kept)
        ]
        print(
            "--quick leaves Prefect out (its server start-up alone outlasts a smoke run); "
            "add --tools prefect,... to include it.",
            file=sys.stderr,
        )
    if args.list:
        for group, cases in plan:
            print(f"{group.title} — {group.variant}")
            for case in cases:
                print(f"    {case.tool}" + (f"  (n/a: {case.na})" if case.na else ""))
        shutil.rmtree(workdir, ignore_errors=True)
        return 0

    about = machine.describe()
    about["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.perf_counter()
    rows: list[Row] = []
    pool = WorkerPool(cfg)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        for i, (group, cases) in enumerate(plan, 1):
            log(f"[{i}/{len(plan)}] {group.title} — {group.variant}")
            t0 = time.perf_counter()
            rows += run_group(group, cases, cfg, pool, index=i, log=log)
            # stop the workers (and servers) of tools that no later group needs
            later = {c.family for g, cs in plan[i:] if not g.shared for c in cs}
            for key in [k for k in pool.workers if not k.startswith(_GROUP_KEYS)]:
                if key not in later:
                    # a smoke run does not wait for a tool's own orderly shutdown (joblib's
                    # loky pool can take half a minute); measurements are already done
                    pool.discard(key, graceful=not cfg.quick)
            log(f"    ({time.perf_counter() - t0:.0f} s)")
    finally:
        pool.close()
        if args.keep_workdir:
            log(f"session folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    log(f"done in {elapsed:.0f} s")

    if cfg.quick:
        print("Quick run: small sizes, one repetition, no warm-up; a smoke test, not results.")
    print(text_report(rows, about), flush=True)
    if args.json:
        settings = {k: v for k, v in asdict(cfg).items() if k != "workdir"}
        header = {
            **about,
            "command": _command(args),
            "elapsed_s": round(elapsed, 1),
            "settings": settings,
        }
        write_json_lines(args.json, rows, header)
    if args.markdown:
        update_markdown(args.markdown, markdown_section(rows, about, _command(args)))
    return 0
