"""What a walk of a plan reports: progress events, its result, and a dry run's verdicts.

Layer 4, beside the scheduler that produces them (``mlflowkit.scheduler``): the driver reads a
``WalkResult``, ``explain`` reads the ``Verdict``s of a ``Rehearsal``, and ``display`` draws
``Progress``. Plain data: nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflowkit.executors.base import TaskResult
    from mlflowkit.records import StepRun

__all__ = ["Progress", "Rehearsal", "Verdict", "WalkResult"]


class Progress:
    """Receives progress events; the default does nothing (``display.py`` draws bars)."""

    def start(self, total: int) -> None:
        """A run with ``total`` step calls starts."""

    def grow(self, extra: int) -> None:
        """A run-time fan-out added ``extra`` step calls."""

    def advance(self, name: str, status: str) -> None:
        """Step call ``name`` ended with ``status``."""

    def finish(self) -> None:
        """The run ended."""


@dataclass
class WalkResult:
    """Outcome of walking a plan: per-node records, digests and value handles."""

    records: dict[str, StepRun]
    order: list[str]
    digests: dict[str, str]
    handles: dict[str, Any]
    failure: TaskResult | None
    packages: dict[str, str]
    #: the ``KeyboardInterrupt`` that stopped the walk, if one did
    interrupted: KeyboardInterrupt | None = None
    #: a dry run's verdicts, by node name (``rehearse``)
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def take_steps(self, keep: Iterable[str]) -> list[StepRun]:
        """The step runs in the walk's order; what the result holds per node is let go of.

        Afterwards ``records`` and ``order`` are empty, and ``digests`` and ``handles`` hold
        only the nodes in ``keep`` (those the caller still reads: the outputs, what is
        published). A run record is written next, its biggest moment for memory: per node,
        the walk's dictionaries cost about as much as the step run itself, and the handles
        hold every intermediate value.
        """
        records = self.records
        steps = [records[name] for name in self.order]
        self.records, self.order = {}, []
        digests, handles = self.digests, self.handles
        self.digests = {name: digests[name] for name in keep if name in digests}
        self.handles = {name: handles[name] for name in keep if name in handles}
        return steps


@dataclass(slots=True)
class Verdict:
    """What a run would do with one node, and the fact it decided on (a dry run's record).

    ``action`` is ``"hit"`` or ``"execute"``; ``reason`` one of: ``known`` (answered before
    the walk, e.g. a named artifact), ``uncached`` (``cache=False``), ``upstream`` (a
    dependency would execute: ``cause`` names the first step that would), ``item`` (an item
    of a reported list), ``stored`` (a cache entry), ``miss`` (no cache entry: ``key``,
    ``args`` and the record's inputs and code say what was looked for), and for a run-time
    fan-out: ``fan-unknown`` (its lists are not known), ``fan-partial`` (``count`` of
    ``total`` elements would execute), ``fan-stored`` (all stored, and their gather),
    ``fan-collect`` (all stored, their gather not).
    """

    action: str
    reason: str
    key: str | None = None
    cause: str | None = None
    count: int = 0
    total: int = 0
    args: dict[str, Any] | None = None


class Rehearsal:
    """A dry run: the walk decides as a run would, and records instead of executing.

    ``known`` maps nodes answered before the walk (named artifacts) to their digests.
    """

    __slots__ = ("fans", "known", "unknown", "verdicts")

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.known = known or {}
        #: node that would execute (or waits on one that would) -> the first one that would
        self.unknown: dict[str, str] = {}
        self.verdicts: dict[str, Verdict] = {}
        self.fans: dict[str, int] = {}  # gather of a fan-out -> its number of elements
