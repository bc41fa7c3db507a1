"""Running groups of cases: worker processes, warm-up, round-robin repetitions, time limits.

Invariants
----------
* Every tool family runs in its own worker process (spawned, so nothing is inherited), kept
  for the whole session: one tool's imports, threads and servers never share an interpreter
  with another's, and a peer that needs a server (Prefect) starts it once. Groups marked
  ``shared`` run all their cases in one worker instead.
* Within a group, each repetition runs every tool once, in an order rotated by one tool per
  repetition (round-robin), after ``cfg.warmup`` unrecorded warm-up rounds.
* A measurement that exceeds its time limit stops its worker (with everything it started:
  workers lead a process group of their own) and is reported as a time-out; an exception is
  reported as an error with its type and message. Nothing is retried or estimated.
* A tool that has spent its time budget on a group stops repeating once it has at least one
  recorded measurement; the row says how many repetitions it got. A warm-up run that alone
  takes half the budget is recorded (and says so): a second run would not fit.
* Before replying, a worker waits until it and its child processes are idle (``settle``), so
  that background work a tool leaves behind (Prefect's server recording task runs) does not
  land in the next tool's measurement.
* Workers write their output to a log file in the session folder; the console stays clean.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib.util import find_spec
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.core import (
    REPO_ROOT,
    Case,
    Config,
    Group,
    NotApplicable,
    Row,
    TimedOut,
    resolve,
    short_error,
)

__all__ = ["WorkerPool", "run_group", "worker_env"]

#: how long building a case (imports, starting pools or servers) may take
BUILD_TIMEOUT_S = 120.0
#: how long closing a case or a worker may take before it is stopped
CLOSE_TIMEOUT_S = 30.0
#: settling after a measurement: sample CPU use every interval until below QUIET (a fraction
#: of one core), for at most LIMIT seconds
SETTLE_INTERVAL_S = 0.1
SETTLE_QUIET = 0.1
SETTLE_LIMIT_S = 60.0
#: the key under which a worker reports how long it settled (not a measurement)
SETTLE_KEY = "_settle_s"
#: a tool busy for longer than this after its runs gets a note saying so
SETTLE_NOTE_S = 1.0


def worker_env(cfg: Config) -> dict[str, str]:
    """Environment of worker processes and of the fresh processes they start.

    The repository root goes on ``PYTHONPATH`` (so ``mlflowkit`` and ``benchmarks`` import from
    this checkout), and mlflowkit's default store and per-user cache point into the session
    folder. Bytecode caching is on, as it is by default, for every tool alike: compiled modules
    go to a folder of the session (``PYTHONPYCACHEPREFIX``), and the workers drop
    ``PYTHONDONTWRITEBYTECODE`` (see ``UNSET_ENV``), which would make every fresh process
    compile the code it imports from source.
    """
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": str(REPO_ROOT) + (os.pathsep + path if path else ""),
        "PYTHONPYCACHEPREFIX": os.path.join(cfg.workdir, "pycache"),
        "MLFLOWKIT_STORE": os.path.join(cfg.workdir, "default-store"),
        "MLFLOWKIT_CACHE_DIR": os.path.join(cfg.workdir, "user-cache"),
    }


#: variables removed from the environment of workers and the processes they start
UNSET_ENV = ("PYTHONDONTWRITEBYTECODE",)


# ---------------------------------------------------------------------------------------------
# the worker process
# ---------------------------------------------------------------------------------------------
def settle(limit_s: float = SETTLE_LIMIT_S) -> float:
    """Wait until this process and its children are idle; return the seconds waited.

    Some tools keep working after a call returns (Prefect's API server records the task runs
    of a flow for seconds afterwards). On a small machine that work would land in the next
    tool's measurement, so a worker settles before it replies.
    """
    try:
        import psutil
    except ImportError:  # psutil comes with dask.distributed; without it, do not wait
        return 0.0
    me = psutil.Process()

    def cpu_seconds() -> float:
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    started = time.perf_counter()
    before = cpu_seconds()
    while time.perf_counter() - started < limit_s:
        time.sleep(SETTLE_INTERVAL_S)
        now = cpu_seconds()
        if now - before < SETTLE_QUIET * SETTLE_INTERVAL_S:
            break
        before = now
    return time.perf_counter() - started


def _worker_main(conn: Connection, folder: str, log_path: str, env: dict[str, str]) -> None:
    """Serve ``build`` / ``run`` / ``close`` / ``exit`` requests until told to exit."""
    os.setsid()  # lead a process group, so a time-out stops everything this worker started
    conn.send("ready")
    os.environ.update(env)
    for name in UNSET_ENV:
        os.environ.pop(name, None)
    sys.dont_write_bytecode = False
    sys.pycache_prefix = env["PYTHONPYCACHEPREFIX"]
    os.makedirs(folder, exist_ok=True)
    os.chdir(folder)  # files that tools drop in the current folder land in the session folder
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    benches: dict[str, Any] = {}
    while True:
        try:
            op, cid, payload = conn.recv()
        except (EOFError, OSError):
            break
        try:
            if op == "build":
                factory, cfg, params = payload
                print(f"--- build {cid} ({factory})", flush=True)
                bench = resolve(factory)(cfg, **params)
                benches[cid] = bench
                reply: tuple[str, Any] = ("ok", bench.info())
                settle()
            elif op == "run":
                sample = dict(benches[cid].once())
                sample[SETTLE_KEY] = settle()
                reply = ("ok", sample)
            elif op == "close":
                bench = benches.pop(cid, None)
                if bench is not None:
                    bench.close()
                reply = ("ok", None)
            else:  # exit
                for bench in benches.values():
                    with contextlib.suppress(Exception):
                        bench.close()
                conn.send(("ok", None))
                break
        except NotApplicable as exc:
            reply = ("n/a", str(exc))
        except TimedOut as exc:
            reply = ("slow", str(exc))
        except BaseException as exc:
            traceback.print_exc()
            reply = ("error", short_error(exc))
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(reply)


class Worker:
    """The parent's end of one worker process."""

    def __init__(self, key: str, cfg: Config) -> None:
        self.key = key
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        folder = os.path.join(cfg.workdir, "workers", _slug(key))
        log_path = os.path.join(cfg.workdir, "logs", _slug(key) + ".log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.log_path = log_path
        # not a daemon: tools start process pools and servers of their own
        self.proc = ctx.Process(
            target=_worker_main,
            args=(child, folder, log_path, worker_env(cfg)),
            name=f"bench-{key}",
        )
        self.proc.start()
        child.close()
        # the worker's first message says it leads a process group of its own
        self.leads_group = self.conn.poll(BUILD_TIMEOUT_S) and self.conn.recv() == "ready"

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.is_alive()

    def call(self, op: str, cid: str, payload: Any, timeout: float) -> tuple[str, Any]:
        """Send one request; ``("timeout", None)`` (worker stopped) when no reply in time."""
        try:
            self.conn.send((op, cid, payload))
            if not self.conn.poll(timeout):
                self.kill()
                return "timeout", None
            status, value = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.kill()
            return "error", f"worker process ended unexpectedly (exit code {self.proc.exitcode})"
        return status, value

    def kill(self) -> None:
        """Stop the worker and every process it started."""
        self._signal_group(signal.SIGKILL)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit; stop it (and what it started) if it does not."""
        if self.alive:
            status, _ = self.call("exit", "", None, CLOSE_TIMEOUT_S)
            if status == "ok":
                self.proc.join(CLOSE_TIMEOUT_S)
        # leftovers of the worker's process group (pool workers, servers)
        self._signal_group(signal.SIGTERM)
        if self.alive:
            self.kill()

    def _signal_group(self, sig: int) -> None:
        """Signal the worker's process group (it and what it started), even once it exited."""
        pid = self.proc.pid
        if pid is None:
            return
        if self.leads_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class WorkerPool:
    """Worker processes by key (a tool family, ``shared``, ``fixture``), started on demand."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workers: dict[str, Worker] = {}

    def get(self, key: str) -> Worker:
        """The live worker for ``key``; a new one if it is missing or was stopped."""
        worker = self.workers.get(key)
        if worker is None or not worker.alive:
            worker = Worker(key, self.cfg)
            self.workers[key] = worker
        return worker

    def discard(self, key: str, *, graceful: bool = False) -> None:
        """Stop the worker for ``key``: at once (after a time-out), or asking it first."""
        worker = self.workers.pop(key, None)
        if worker is not None:
            if graceful:
                worker.stop()
            else:
                worker.kill()

    def close(self) -> None:
        """Stop every worker."""
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()


# ---------------------------------------------------------------------------------------------
# running one group
# ---------------------------------------------------------------------------------------------
@dataclass
class _CaseRun:
    case: Case
    cid: str
    worker_key: str
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)
    built: bool = False
    live: bool = False
    spent: float = 0.0
    last: float = 0.0
    settles: list[float] = field(default_factory=list)


def _missing(case: Case) -> list[str]:
    return [m for m in case.requires if find_spec(m) is None]


def run_group(
    group: Group,
    cases: list[Case],
    cfg: Config,
    pool: WorkerPool,
    *,
    index: int,
    log: Any = None,
) -> list[Row]:
    """Measure ``cases`` of ``group`` and return one row per metric and case."""
    say = log or (lambda text: None)
    runs: list[_CaseRun] = []
    for case in cases:
        key = f"group-{index}" if group.shared else case.family
        run = _CaseRun(case, f"{index}:{case.tool}", key)
        runs.append(run)
        if case.na:
            run.status, run.notes = "n/a", [case.na]
        elif missing := _missing(case):
            hint = f" (pip install {case.install})" if case.install else ""
            run.status, run.notes = "n/a", [f"{', '.join(missing)} not installed{hint}"]
    active = [r for r in runs if r.status == "ok"]

    extra: dict[str, Any] = {}
    fixture_worker = None
    if group.fixture and active:
        fixture_worker = pool.get(f"fixture-{index}")
        status, value = fixture_worker.call(
            "build", "fixture", (group.fixture, cfg, {}), BUILD_TIMEOUT_S
        )
        if status == "ok":
            extra = {k: v for k, v in value.items() if k != "note"}
        else:
            reason = value if status != "timeout" else "timed out"
            for run in active:
                run.status, run.notes = "error", [f"setting up the group failed: {reason}"]
            active = []

    for run in active:
        worker = pool.get(run.worker_key)
        params = {**run.case.params, **extra}
        status, value = worker.call(
            "build", run.cid, (run.case.factory, cfg, params), BUILD_TIMEOUT_S
        )
        if status == "ok":
            run.built = run.live = True
            if value.get("note"):
                run.notes.append(value["note"])
        elif status == "n/a":
            run.status, run.notes = "n/a", [value]
        elif status == "timeout":
            run.status, run.notes = "timeout", [f"setup took more than {BUILD_TIMEOUT_S:.0f} s"]
            _lost_worker(pool, run, runs)
        elif status == "slow":
            run.status, run.notes = "timeout", [f"setup: {value}"]
        else:
            run.status, run.notes = "error", [value]

    reps = min(cfg.reps, group.max_reps) if group.max_reps else cfg.reps
    timeout = group.timeout_s or cfg.run_timeout_s
    for rep in range(cfg.warmup + reps):
        live = [r for r in runs if r.live]
        if not live:
            break
        shift = rep % len(live)
        recorded = rep >= cfg.warmup
        for run in live[shift:] + live[:shift]:
            if not run.live:  # stopped earlier in this round (its worker was restarted)
                continue
            if recorded and run.samples and run.spent + run.last > cfg.case_budget_s:
                run.live = False
                run.notes.append(
                    f"{len(run.samples)} of {reps} repetitions (time budget "
                    f"{cfg.case_budget_s:.0f} s per tool)"
                )
                continue
            worker = pool.get(run.worker_key)
            started = time.perf_counter()
            status, value = worker.call("run", run.cid, None, timeout + SETTLE_LIMIT_S)
            run.last = time.perf_counter() - started
            run.spent += run.last
            if status == "ok":
                run.settles.append(value.pop(SETTLE_KEY, 0.0))
                keep = recorded
                if not recorded and run.last > cfg.case_budget_s / 2:
                    # one run costs half the budget: first-run effects are lost in it, and a
                    # second run would not fit; the warm-up run is the measurement
                    keep = True
                    run.notes.append("warm-up run recorded (a run takes too long to repeat)")
                if keep:
                    run.samples.append(dict(value))
            elif status in ("timeout", "slow"):
                run.live = False
                if not run.samples:
                    run.status = "timeout"
                if status == "slow":
                    run.notes.append(value)
                else:
                    limit = timeout + SETTLE_LIMIT_S
                    run.notes.append(f"no reply within {limit:.0f} s: the run was stopped")
                    _lost_worker(pool, run, runs)
            else:
                run.live = False
                run.status = "n/a" if status == "n/a" else "error"
                run.notes.append(str(value))
                run.samples.clear()

    for run in runs:
        worker = pool.workers.get(run.worker_key)
        if run.built and worker is not None and worker.alive:
            worker.call("close", run.cid, None, CLOSE_TIMEOUT_S)
    if fixture_worker is not None:
        pool.discard(f"fixture-{index}", graceful=True)
    if group.shared:
        pool.discard(f"group-{index}", graceful=True)

    for run in runs:
        if run.settles and statistics.median(run.settles) > SETTLE_NOTE_S:
            busy = statistics.median(run.settles)
            if max(run.settles) >= SETTLE_LIMIT_S:
                waited = f"still busy after the {SETTLE_LIMIT_S:.0f} s the harness waits"
            else:
                waited = "waited out before the next measurement"
            run.notes.append(
                f"busy for a median {busy:.1f} s after each run (background work, not in the "
                f"times; {waited})"
            )

    rows: list[Row] = []
    for metric in group.metrics:
        for run in runs:
            values = [metric.convert(s[metric.key]) for s in run.samples if metric.key in s]
            status = run.status
            if status == "ok" and not values:
                status = "error"
                run.notes.append("no measurement recorded")
            rows.append(
                Row(
                    workload=group.workload,
                    name=group.name,
                    variant=f"{group.variant}{': ' + metric.label if metric.label else ''}",
                    row_id=metric.row_id,
                    tool=run.case.tool,
                    kind=run.case.kind,
                    n=group.n,
                    unit=metric.unit,
                    status=status,
                    values=values if status == "ok" else [],
                    notes="; ".join(dict.fromkeys(run.notes)),
                    higher_is_better=metric.higher_is_better,
                )
            )
    _ratios(rows)
    for run in runs:
        say(f"    {run.case.tool:<28} {run.status:<8} {len(run.samples)} rep(s)")
    return rows


def _lost_worker(pool: WorkerPool, culprit: _CaseRun, runs: list[_CaseRun]) -> None:
    """The worker of ``culprit`` was stopped: the other cases it hosted stop too."""
    pool.discard(culprit.worker_key)
    for other in runs:
        if other is not culprit and other.worker_key == culprit.worker_key and other.built:
            other.built = False
            if other.live:
                other.live = False
                other.notes.append(
                    f"stopped early: its worker stopped when {culprit.case.tool} did"
                )


def _ratios(rows: list[Row]) -> None:
    """Set ``ratio`` (mlflowkit / best peer) and ``best_peer`` on mlflowkit's rows."""
    by_row: dict[str, list[Row]] = {}
    for row in rows:
        by_row.setdefault(row.row_id, []).append(row)
    for group_rows in by_row.values():
        peers = [r for r in group_rows if r.kind == "peer" and r.status == "ok"]
        if not peers:
            continue
        pick = max if group_rows[0].higher_is_better else min
        best = pick(peers, key=lambda r: r.median or 0.0)
        for row in group_rows:
            if row.kind == "mlflowkit" and row.status == "ok" and best.median:
                row.ratio = (row.median or 0.0) / best.median
                row.best_peer = best.tool
