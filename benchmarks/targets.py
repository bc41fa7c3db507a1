"""mlflowkit's performance targets: ratios to a peer measured in the same run.

Absolute times move by ±20% from one minute to the next on a shared machine, so no target is an
absolute number. Each target bounds mlflowkit's median on one metric (``row_id``, see the
workload modules) as a multiple of a peer's median on the same metric, both from the same run:
``"<="`` for times (mlflowkit at most ``factor`` times the peer), ``">="`` for rates (at least
``factor`` times the peer).

The peer is named by its tool name exactly as the table prints it (``Case.tool``), or is
``BEST_PEER``: the fastest peer measured on that metric in the run (reference yardsticks such
as memory bandwidth are never a peer). A target whose peer or whose mlflowkit row was not
measured in the run (left out by ``--tools``, not applicable, failed, timed out) is *not
assessed*, never met.

The targets, from the performance issue:

* A — a chain of 1000 steps, orchestration only, planning included: ≤ 0.5 times the best peer;
* A' — the same chain with every output persisted: ≤ 0.5 times ``joblib.Memory``;
* B — a fan-out of 1000 tasks and a reduce, mlflowkit with its defaults (outputs persisted)
  on warm pools: ≤ 2 times bare ``concurrent.futures`` on threads, ≤ 2 times joblib's loky on
  processes; on a Dask ``LocalCluster``: ≤ 0.2 times Dask's own ``client.map``;
* C — a fully cached 200-step re-run in a fresh process: ≤ 0.25 times ``joblib.Memory``, on
  the *run call* row (``rerun/run``): what the re-run costs a user beyond starting Python and
  importing — building the graph, opening the store and 200 cache lookups, in a process that
  has loaded nothing yet. The whole-process row (``rerun/process``) adds interpreter start-up
  (the same for every tool) and imports (bounded by F), which make up most of it; the issue
  states C per step, as this row is;
* D — a cache hit on a 1 GiB input: ≤ 0.1 times the best peer;
* E — hashing throughput: ≥ 0.9 times the ``blake3`` package on all threads;
* F — import time: ≤ 0.5 times ``import dask``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.core import Row

__all__ = ["BEST_PEER", "TARGETS", "Assessment", "Target", "assess", "assess_all"]

#: the ``peer`` of a target measured against the fastest peer of its metric
BEST_PEER = "best peer"


@dataclass(frozen=True)
class Target:
    """A bound on mlflowkit's median as a multiple of a peer's median, from the same run.

    ``bound`` is ``"<="`` for times and memory, ``">="`` for rates; ``peer`` is a tool name as
    the table prints it, or ``BEST_PEER``; ``context`` says what a reader needs to know to
    read the comparison.
    """

    key: str
    row_id: str
    bound: str  # "<=" or ">="
    factor: float
    peer: str
    context: str = ""

    def __post_init__(self) -> None:
        if self.bound not in ("<=", ">="):
            raise ValueError(
                f"target {self.key}: bound must be '<=' (times) or '>=' (rates), got {self.bound!r}"
            )
        if not self.factor > 0:
            raise ValueError(f"target {self.key}: factor must be positive, got {self.factor!r}")

    def met(self, ratio: float) -> bool:
        """Whether a ratio mlflowkit / peer meets the bound."""
        return ratio <= self.factor if self.bound == "<=" else ratio >= self.factor

    def text(self) -> str:
        """``"≤ 0.5x joblib.Memory"`` (with a multiplication sign)."""
        sign = "≤" if self.bound == "<=" else "≥"
        return f"{sign} {self.factor:g}\u00d7 {self.peer}"


#: the targets, keyed by metric row id (see the workload modules)
TARGETS: dict[str, Target] = {
    t.row_id: t
    for t in (
        Target("A", "chain/orchestration", "<=", 0.5, BEST_PEER, "planning included"),
        Target(
            "A'",
            "chain/persisted",
            "<=",
            0.5,
            "joblib.Memory",
            "every output persisted, by both",
        ),
        Target(
            "B threads",
            "fanout/threads",
            "<=",
            2,
            "concurrent.futures (threads)",
            "warm pools; mlflowkit persists every output, the peer nothing",
        ),
        Target(
            "B processes",
            "fanout/processes",
            "<=",
            2,
            "joblib (loky)",
            "warm pools; mlflowkit persists every output, the peer nothing",
        ),
        Target(
            "B cluster",
            "fanout/cluster",
            "<=",
            0.2,
            "dask (client.map)",
            "the same LocalCluster; nothing stored",
        ),
        Target(
            "C",
            "rerun/run",
            "<=",
            0.25,
            "joblib.Memory",
            "run call in a fresh process, imports excluded",
        ),
        Target("D", "bigcache/time", "<=", 0.1, BEST_PEER, "fresh process, 1 GiB input"),
        Target(
            "E",
            "hash/throughput",
            ">=",
            0.9,
            "blake3 (all threads)",
            "same process, same buffer",
        ),
        Target("F", "import/time", "<=", 0.5, "import dask"),
    )
}


@dataclass(frozen=True)
class Assessment:
    """One target against one run's rows.

    ``mine`` and ``peer`` are the rows compared (``peer`` is the best peer's row for a
    ``BEST_PEER`` target); ``met`` is None when the target is not assessed, and ``reason``
    then says why.
    """

    target: Target
    mine: Row | None
    peer: Row | None
    ratio: float | None
    met: bool | None
    reason: str = ""

    def shown_on(self, row: Row) -> bool:
        """Whether the report shows this assessment on ``row``: the mlflowkit row assessed (or
        the metric's mlflowkit rows, when none was); a metric may show mlflowkit twice."""
        return self.mine is None or self.mine is row

    @property
    def peer_tool(self) -> str:
        """The peer compared against: the named one, or the best peer found in the run."""
        if self.target.peer == BEST_PEER and self.peer is not None:
            return self.peer.tool
        return self.target.peer

    @property
    def verdict(self) -> str:
        """``"met"``, ``"MISSED"`` or ``"not assessed (peer X not measured)"``."""
        if self.met is None:
            return f"not assessed ({self.reason})"
        return "met" if self.met else "MISSED"


def _measured(row: Row) -> bool:
    median = row.median
    return row.status == "ok" and median is not None and median > 0


def _pick_peer(target: Target, rows: list[Row]) -> tuple[Row | None, str]:
    """The peer row to compare against, or None and why."""
    if target.peer == BEST_PEER:
        peers = [r for r in rows if r.kind == "peer" and _measured(r)]
        if not peers:
            return None, "no peer measured"
        pick = max if target.bound == ">=" else min
        return pick(peers, key=lambda r: r.median or 0.0), ""
    named = [r for r in rows if r.tool == target.peer and r.kind == "peer"]
    if not named or not _measured(named[0]):
        return None, f"peer {target.peer} not measured"
    return named[0], ""


def assess(target: Target, rows: Iterable[Row]) -> Assessment:
    """Assess ``target`` on the rows of one run (rows of other metrics are ignored).

    A group may show mlflowkit more than once (the fan-out also shows ``cache=False`` steps);
    the row assessed is the first, that of the group's first mlflowkit case: the defaults.
    """
    here = [r for r in rows if r.row_id == target.row_id]
    mine = next((r for r in here if r.kind == "mlflowkit"), None)
    peer, why = _pick_peer(target, here)
    if mine is None or not _measured(mine):
        status = "not run" if mine is None else mine.status
        return Assessment(target, mine, peer, None, None, f"mlflowkit not measured: {status}")
    if peer is None:
        return Assessment(target, mine, None, None, None, why)
    ratio = (mine.median or 0.0) / (peer.median or 1.0)
    return Assessment(target, mine, peer, ratio, target.met(ratio))


def assess_all(rows: Iterable[Row]) -> list[Assessment]:
    """Every target whose metric is among ``rows`` (a workload left out of the run has none)."""
    rows = list(rows)
    present = {r.row_id for r in rows}
    return [assess(t, rows) for t in TARGETS.values() if t.row_id in present]
