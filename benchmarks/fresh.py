"""Measuring in fresh processes: one ``python -m benchmarks.child`` per measurement.

The child times what it is asked to (from just before the run call to just after) and reports
it; the parent adds the wall time of the whole process (interpreter start, imports, run, exit)
as ``process_s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from benchmarks.child import ERROR, NA, NA_STATUS, RESULT
from benchmarks.core import Bench, Case, Config, NotApplicable, TimedOut
from benchmarks.peers import fresh_dir

__all__ = ["FreshProcessBench", "peak_rss_bytes", "run_child"]

#: how long the populating run at setup may take (the engine allows 120 s for a setup)
POPULATE_TIMEOUT_S = 110.0


def run_child(target: str, kwargs: dict[str, Any], timeout: float) -> dict[str, float]:
    """Run ``target(**kwargs)`` in a fresh interpreter; its result plus ``process_s``.

    Raises
    ------
    NotApplicable
        The child said the tool cannot do the workload.
    TimedOut
        The child ran longer than ``timeout`` seconds (it was stopped).
    RuntimeError
        The child failed; the message names its exception.
    """
    cmd = [sys.executable, "-m", "benchmarks.child", target, json.dumps(kwargs)]
    t0 = time.perf_counter()
    # a session of its own: what the child leaves running (Prefect's server) is stopped below
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _stop_group(child.pid, signal.SIGKILL)
        child.communicate()
        raise TimedOut(f"the fresh process ran more than {timeout:.0f} s and was stopped") from exc
    wall = time.perf_counter() - t0
    _stop_group(child.pid, signal.SIGTERM)
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    if proc.returncode == NA_STATUS and last.startswith(NA):
        raise NotApplicable(last[len(NA) :])
    if proc.returncode != 0 or not last.startswith(RESULT):
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)  # into the worker's log
        if last.startswith(ERROR):
            raise RuntimeError(f"in the fresh process: {last[len(ERROR) :]}")
        raise RuntimeError(f"the fresh process ended with exit status {proc.returncode}")
    return {**json.loads(last[len(RESULT) :]), "process_s": wall}


def _stop_group(pgid: int, sig: int) -> None:
    """Signal the process group a child led (its leftovers), if any of it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class FreshProcessBench(Bench):
    """Runs ``target`` once with ``mode="populate"`` at setup, then per measurement.

    ``target`` is a ``"module:function"`` taking ``mode`` (``"populate"`` or ``"measure"``),
    ``folder`` (this case's own folder, for its cache) and ``params``.
    """

    def __init__(self, cfg: Config, target: str, **params: Any) -> None:
        super().__init__(cfg)
        self.target = target
        self.kwargs = dict(params)
        self.folder = fresh_dir(cfg.workdir, "fresh-")
        # below the engine's limits, so the child is stopped here and the worker lives on
        self._call("populate", POPULATE_TIMEOUT_S)

    def _call(self, mode: str, timeout: float) -> dict[str, float]:
        kwargs = {**self.kwargs, "mode": mode, "folder": self.folder}
        return run_child(self.target, kwargs, timeout)

    def once(self) -> dict[str, float]:
        return self._call("measure", max(5.0, self.cfg.run_timeout_s - 5.0))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def peak_rss_bytes() -> int:
    """The peak resident memory of this process so far, in bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cached_peer_cases(module: str, **params: Any) -> tuple[Case, ...]:
    """mlflowkit and the peers with a persistent cache, each run by ``module:child_<family>``.

    The fresh-process workloads (C and D) compare the same five tools this way.
    """

    def case(tool: str, family: str, kind: str = "peer", **extra: Any) -> Case:
        target = {"target": f"{module}:child_{family}", **params}
        return Case(tool, family, "benchmarks.fresh:FreshProcessBench", target, kind=kind, **extra)

    return (
        case("mlflowkit", "mlflowkit", kind="mlflowkit"),
        case("joblib.Memory", "joblib", requires=("joblib",), install="joblib"),
        case(
            "hamilton (with_cache)", "hamilton", requires=("hamilton",), install="apache-hamilton"
        ),
        case("prefect (persisted)", "prefect", requires=("prefect",), install="prefect"),
        case("redun", "redun", requires=("redun",), install="redun"),
    )
