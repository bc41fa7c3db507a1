"""Plain records of runs and step runs, shared by the scheduler, the store and the CLI.

Invariant: records hold only JSON-able data (str, int, float, bool, None, lists and dicts of
those), so they round-trip through ``to_dict``/``from_dict`` unchanged and any store can keep them.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "METRICS",
    "NO_META",
    "CacheEntry",
    "MetricLog",
    "RunRecord",
    "StepRun",
    "count_calls",
    "describe_calls",
    "output_digests",
]

#: The key of a step execution's metric log in its output ``meta`` (the cache entry, the
#: ``TaskResult``): the metrics travel with the output they were logged for.
METRICS = "metrics"

#: The ``meta`` of an output with no facts to report: one shared empty dict, never changed
#: (a run keeps one per call; nothing writes into an entry's or a result's ``meta``).
NO_META: dict[str, Any] = {}


class _NoUpstream(dict):  # type: ignore[type-arg]
    """The ``upstream`` of a step call given no structure of upstream values: most calls.

    One empty dict shared by every such record (a run keeps one record per call: a dict each
    was ~64 bytes per call of a 100,000-call run), so it refuses to be changed in place;
    a record's ``upstream`` is replaced instead (``record.upstream = {...}``).
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this step run's `upstream` is the shared empty mapping of calls without "
            "upstream structures and cannot be changed in place: assign a new dict to "
            "`step_run.upstream` instead"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (_no_upstream, ())


def _no_upstream() -> dict[str, list[str]]:
    return NO_UPSTREAM


#: the shared ``StepRun.upstream`` of calls without upstream structures (see ``_NoUpstream``)
NO_UPSTREAM: dict[str, list[str]] = _NoUpstream()

#: The metrics one step execution logged: name -> ``[[step, value], ...]`` in logging order
#: (plain lists, so the log is JSON as it is). See ``mlflowkit.tracking``.
MetricLog = dict[str, list[list[float]]]

StepStatus = Literal["cached", "executed", "failed", "skipped"]
RunStatus = Literal["running", "succeeded", "failed", "interrupted"]


@dataclass(slots=True)  # a store writes it as a row of values (see RunRecord.to_stored)
class StepRun:
    """What happened to one step call in one run.

    ``inputs`` maps each parameter name to the content digest of what was passed (for a
    structure holding upstream values, ``upstream`` lists their digests);
    ``step`` is the step's identity (``module:qualname``), ``name`` its display name in the plan.
    ``metric_log`` holds the metrics logged by the execution that produced the output (for a
    cache hit: the execution it reuses), or None when it logged none.
    """

    name: str
    key: str | None = None
    status: StepStatus = "skipped"
    attempts: int = 0
    duration_s: float = 0.0
    output_digest: str | None = None
    error: str | None = None
    step: str = ""
    code_digest: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    traceback: str | None = None
    #: for a parameter given a structure holding upstream values (``[a, b]``, a gather): the
    #: digests of those values, in order; lineage follows them
    upstream: dict[str, list[str]] = field(default_factory=_no_upstream)
    metric_log: MetricLog | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The last value logged of each metric (``mk.log_metric``), by name."""
        log = self.metric_log
        return {name: points[-1][1] for name, points in log.items()} if log else {}

    def metric_history(self, name: str) -> list[tuple[int, float]]:
        """Every value logged for metric ``name``, as ``(step, value)`` in logging order.

        ``step`` is the ``step=`` given to ``mk.log_metric``, or else the value's position
        among that metric's values (0, 1, 2, ...).

        Raises
        ------
        KeyError
            The step call logged no metric ``name`` (the message lists those it logged).
        """
        points = (self.metric_log or {}).get(name)
        if points is None:
            logged = sorted(self.metric_log or {})
            raise KeyError(f"step call {self.name!r} logged no metric {name!r}; it logged {logged}")
        return [(int(step), value) for step, value in points]

    @property
    def cached(self) -> bool:
        """True when the output came from the cache instead of executing."""
        return self.status == "cached"

    @property
    def internal(self) -> bool:
        """True for mlflowkit's own small nodes: ``ref[i]``, ``ref.attr`` and fan-out gathers."""
        return self.step.startswith("mlflowkit.plan:_op_")

    def to_dict(self) -> dict[str, Any]:
        # written by hand: dataclasses.asdict deep-copies every field, and a run record of a
        # 10,000-step plan is serialized on every run
        return {
            "name": self.name,
            "key": self.key,
            "status": self.status,
            "attempts": self.attempts,
            "duration_s": self.duration_s,
            "output_digest": self.output_digest,
            "error": self.error,
            "step": self.step,
            "code_digest": self.code_digest,
            "inputs": dict(self.inputs),
            "started_at": self.started_at,
            "traceback": self.traceback,
            "upstream": {k: list(v) for k, v in self.upstream.items()},
            "metric_log": self.metric_log,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRun:
        names = _STEP_FIELDS
        # an empty ``upstream`` is the shared one, as in a record made by a run
        return cls(**{k: v for k, v in data.items() if k in names and (v or k != "upstream")})


def count_calls(steps: Iterable[StepRun]) -> dict[str, int]:
    """How many of the user's step calls ended with each status, and ``"total"``.

    Internal nodes (``StepRun.internal``: items of an unpacked tuple, attributes, the gathering
    of a fan-out) are not step calls and are not counted; every summary of a run (the command
    line, ``repr(run)``, its notebook table, the progress bars) counts this way.
    """
    counts = {"total": 0, "executed": 0, "cached": 0, "failed": 0, "skipped": 0}
    for s in steps:
        if not s.internal:
            counts["total"] += 1
            counts[s.status] = counts.get(s.status, 0) + 1
    return counts


def describe_calls(counts: dict[str, int]) -> str:
    """``"3 executed, 11 cached"``, with failed and skipped calls when there are any."""
    text = f"{counts.get('executed', 0)} executed, {counts.get('cached', 0)} cached"
    for status in ("failed", "skipped"):
        if counts.get(status):
            text += f", {counts[status]} {status}"
    return text


_STEP_COLUMNS = tuple(f.name for f in fields(StepRun))
_STEP_FIELDS = frozenset(_STEP_COLUMNS)
_STEP_ROW = operator.attrgetter(*_STEP_COLUMNS)  # a step's values as one tuple, made in C


@dataclass
class RunRecord:
    """One run of a plan: its steps in topological order, environment and output template.

    ``output`` is the pipeline's return structure with every Ref replaced by
    ``{"$digest": "<hex>"}`` (plain values kept as they are, when JSON-able).

    ``owner`` names the process that ran it (``host``, ``boot``, ``pid``, ``start``), written
    by the store with the ``running`` record; a ``running`` record whose owner is provably
    gone reads back as ``interrupted``.
    """

    id: str
    pipeline: str
    params: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = "running"
    started_at: float = 0.0
    finished_at: float | None = None
    steps: list[StepRun] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    executor: str = "local"
    pins: list[str] = field(default_factory=list)
    owner: dict[str, Any] = field(default_factory=dict)
    #: where the pipeline function lives (``module``, ``qualname``, ``file``), so that
    #: ``mk.reproduce`` can plan the run again; empty in records made before it was kept
    source: dict[str, str] = field(default_factory=dict)
    #: named artifact versions this run made or found equal (``name``, ``version``,
    #: ``digest``), and those it read (with the ``node`` that read each)
    published: list[dict[str, Any]] = field(default_factory=list)
    consumed: list[dict[str, Any]] = field(default_factory=list)

    def _fields_but_steps(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "steps"}

    def to_dict(self) -> dict[str, Any]:
        data = self._fields_but_steps()
        data["steps"] = [s.to_dict() for s in self.steps]
        return data

    def to_stored(self) -> dict[str, Any]:
        """The layout a store writes: ``to_dict()`` with the steps as rows of values.

        ``step_fields`` names the columns once, instead of every step repeating its field
        names: a 1000-call run record is a third smaller, and writing it is bound by its size.
        ``from_dict`` reads both layouts.
        """
        return self.stored_head(list(map(_STEP_ROW, self.steps)))

    def stored_head(self, steps: list[tuple[Any, ...]] | None = None) -> dict[str, Any]:
        """``to_stored()`` with ``steps`` (default: none) as its rows; ``"steps"`` comes last.

        A store writes a long record in pieces: this head with no rows, then the rows of
        ``stored_rows`` a slice at a time, so that no copy of the whole record is ever made.
        """
        data = self._fields_but_steps()
        data["step_fields"] = list(_STEP_COLUMNS)
        data["steps"] = [] if steps is None else steps
        return data

    def stored_rows(self, start: int, stop: int) -> list[tuple[Any, ...]]:
        """The rows of ``to_stored()["steps"][start:stop]`` (steps ``start`` to ``stop``)."""
        return list(map(_STEP_ROW, self.steps[start:stop]))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        columns = data.get("step_fields")
        steps = data.get("steps", [])
        if columns is not None:  # the stored layout (to_stored): rows of values
            steps = [dict(zip(columns, row, strict=False)) for row in steps]
        kwargs["steps"] = [StepRun.from_dict(s) for s in steps]
        return cls(**kwargs)


@dataclass(slots=True)  # a run's cache holds one per step call it hit or recorded
class CacheEntry:
    """A cache entry: the step call with this key produced the value with ``output_digest``.

    ``stored`` is False for outputs that were deliberately not persisted (derived views such as
    ``ref[0]`` that can be recomputed from their parent); ``meta`` holds small facts about the
    value known without loading it (e.g. ``{"len": 3, "type": "builtins.list"}``).
    """

    key: str
    output_digest: str
    step: str = ""
    stored: bool = True
    size: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "output_digest": self.output_digest,
            "step": self.step,
            "stored": self.stored,
            "size": self.size,
            "meta": dict(self.meta),
            "created_at": self.created_at,
            "run_id": self.run_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheEntry:
        if data.keys() <= _ENTRY_FIELDS:  # the usual case: read on every cache hit
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _ENTRY_FIELDS})


_ENTRY_FIELDS = frozenset(f.name for f in fields(CacheEntry))


def output_digests(template: Any) -> list[str]:
    """The digests a run record's output template refers to (its ``{"$digest": ...}``
    leaves, nested in lists and dicts), in order."""
    if isinstance(template, dict):
        digest = template.get("$digest")
        if isinstance(digest, str) and len(template) == 1:
            return [digest]
        return [d for v in template.values() for d in output_digests(v)]
    if isinstance(template, list):
        return [d for v in template for d in output_digests(v)]
    return []
