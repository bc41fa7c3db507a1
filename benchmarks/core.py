"""The benchmark data model: configuration, cases, groups and result rows.

A *group* is one comparison: a workload variant (say "chain of 1000 steps, orchestration
only") and the *cases* that take part in it, one per tool. A case names a ``Bench`` class by
dotted path; the engine builds it inside a worker process and calls ``once()`` for every
measurement. ``once()`` times what it measures itself (setup such as a fresh temporary folder
stays outside the timed region) and returns raw numbers keyed by metric, usually seconds.

A group turns those raw numbers into one *row* per metric and tool: e.g. µs per step. Rows are
what the report prints and writes as JSON lines.
"""

from __future__ import annotations

import importlib
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the repository root (``benchmarks/`` lives directly below it)
REPO_ROOT = Path(__file__).resolve().parent.parent

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Config:
    """Sizes, repetitions and time limits of one benchmark session.

    ``full()`` is the real run (fits in 20 minutes on 2 cores); ``quick()`` is a smoke run of
    under a minute with smaller sizes and a single repetition.
    """

    quick: bool
    reps: int
    warmup: int
    chain_n: int
    chain_long_n: int
    fanout_n: int
    rerun_n: int
    big_bytes: int
    hash_bytes: int
    #: the longest one measurement may take before its worker is stopped
    run_timeout_s: float
    #: how long one tool may spend on one group; repetitions stop early past it
    case_budget_s: float
    #: a folder for the session's temporary files (stores, caches, logs)
    workdir: str = ""

    @classmethod
    def full(cls, workdir: str = "") -> Config:
        """The full run: the sizes of the issue, one warm-up and five repetitions."""
        return cls(
            quick=False,
            reps=5,
            warmup=1,
            chain_n=1000,
            chain_long_n=10_000,
            fanout_n=1000,
            rerun_n=200,
            big_bytes=GIB,
            hash_bytes=GIB,
            run_timeout_s=90.0,
            case_budget_s=40.0,
            workdir=workdir,
        )

    @classmethod
    def quick_run(cls, workdir: str = "") -> Config:
        """The smoke run: small sizes, no warm-up, one repetition."""
        return cls(
            quick=True,
            reps=1,
            warmup=0,
            chain_n=200,
            chain_long_n=1500,
            fanout_n=200,
            rerun_n=50,
            big_bytes=64 * MIB,
            hash_bytes=64 * MIB,
            run_timeout_s=30.0,
            case_budget_s=5.0,
            workdir=workdir,
        )


class NotApplicable(Exception):
    """Raised by a ``Bench`` constructor when its tool cannot do the workload (reason given)."""


class TimedOut(Exception):
    """Raised by ``Bench.once`` when something it waits for (a fresh process) ran too long."""


class Bench:
    """One tool doing one workload; built inside a worker process.

    Subclasses take keyword parameters from their ``Case`` (plus ``cfg``), prepare in
    ``__init__`` (raise ``NotApplicable`` when the tool cannot do the workload), measure in
    ``once()`` and release resources in ``close()``.
    """

    def __init__(self, cfg: Config, **params: Any) -> None:
        self.cfg = cfg
        self.params = params

    def once(self) -> dict[str, float]:
        """Do the workload once; return raw measurements keyed by metric (seconds, bytes…)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Facts for the other cases of the group (used by fixtures, e.g. a cluster address)."""
        return {}

    def close(self) -> None:
        """Release what ``__init__`` acquired (pools, clusters, temporary folders)."""


def short_error(exc: BaseException) -> str:
    """``"RecursionError: maximum recursion depth exceeded"``: one line, at most 160 chars."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split()) if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def resolve(path: str) -> Any:
    """The object named by ``"package.module:attr"``."""
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class Metric:
    """How a raw measurement becomes a reported value.

    The value is ``raw * scale``, or ``scale / raw`` for a rate (``rate=True``, e.g. GB/s from
    seconds); ``higher_is_better`` follows. ``row_id`` identifies the row for targets.
    """

    key: str
    row_id: str
    label: str
    unit: str
    scale: float = 1.0
    rate: bool = False

    @property
    def higher_is_better(self) -> bool:
        """Rates are better high; times and memory low."""
        return self.rate

    def convert(self, raw: float) -> float:
        """The reported value of one raw measurement."""
        if self.rate:
            return self.scale / raw if raw > 0 else float("inf")
        return raw * self.scale


@dataclass(frozen=True)
class Case:
    """One tool in a group: which ``Bench`` to build and with which parameters.

    ``kind`` is ``"mlflowkit"``, ``"peer"`` or ``"reference"`` (a yardstick such as memory
    bandwidth: shown, but never the "best peer"). ``na`` marks a tool that cannot do the
    workload, with the reason, without building anything. ``requires`` lists the modules that
    must be importable (``pip`` names in ``install``).
    """

    tool: str
    family: str
    factory: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "peer"
    na: str | None = None
    requires: tuple[str, ...] = ()
    install: str = ""


@dataclass(frozen=True)
class Group:
    """One comparison: a workload variant and the cases taking part in it.

    ``shared=True`` builds every case in one worker process (the hash functions share one
    buffer and the memory-bandwidth yardstick; workloads that measure in fresh processes need
    no isolation). Otherwise each tool family gets its own worker process, kept for the session.
    ``fixture`` names a ``Bench`` built first, in a worker of its own, whose ``info()`` is added
    to every case's parameters (e.g. the address of a shared Dask cluster).
    """

    workload: str
    name: str
    variant: str
    n: int
    metrics: tuple[Metric, ...]
    cases: tuple[Case, ...]
    shared: bool = False
    fixture: str | None = None
    max_reps: int | None = None
    timeout_s: float | None = None
    note: str = ""

    @property
    def title(self) -> str:
        """``"A chain"``."""
        return f"{self.workload} {self.name}"


@dataclass
class Row:
    """One line of the results: a metric of a group for one tool."""

    workload: str
    name: str
    variant: str
    row_id: str
    tool: str
    kind: str
    n: int
    unit: str
    status: str  # "ok" | "n/a" | "error" | "timeout"
    values: list[float] = field(default_factory=list)
    notes: str = ""
    higher_is_better: bool = False
    ratio: float | None = None
    best_peer: str | None = None

    @property
    def median(self) -> float | None:
        """The median of the measured values (None when nothing was measured)."""
        return statistics.median(self.values) if self.values else None

    @property
    def min(self) -> float | None:
        """The smallest measured value."""
        return min(self.values) if self.values else None

    @property
    def max(self) -> float | None:
        """The largest measured value."""
        return max(self.values) if self.values else None
