"""``mk.Run``: the record of one run, and its output loaded on first access.

Invariant: a ``Run`` never loads an output value until ``.output`` is read; then each value
comes from memory when the run happened in this process, else from the store by digest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.errors import StoreError
from mlflowkit.placeholders import map_leaves
from mlflowkit.records import RunRecord, StepRun, count_calls, describe_calls

if TYPE_CHECKING:
    from mlflowkit.registry.records import ArtifactVersion
    from mlflowkit.store.base import ArtifactStore

__all__ = ["Run"]

_UNSET: Any = object()


class Run:
    """One run of a plan.

    Attributes
    ----------
    id, status:
        The run id and ``"succeeded"`` / ``"failed"``.
    steps:
        ``mk.StepRun`` records in topological order, internal nodes included (items of an
        unpacked tuple, attributes, gathers: ``StepRun.internal``); summaries count only the
        others, the user's step calls.
    record:
        The full ``RunRecord`` (environment, params, timings), as written to the store.
    metrics:
        ``{"<step>.<metric>": value}``, the metrics its step calls logged (``mk.log_metric``).
    """

    def __init__(
        self,
        record: RunRecord,
        store: ArtifactStore | None,
        output_template: Any = _UNSET,
        values: dict[str, Any] | None = None,
    ) -> None:
        self.record = record
        self.store = store
        self._live = output_template is not _UNSET  # the plan's template, with Refs
        self._template = record.output if output_template is _UNSET else output_template
        self._values = values or {}
        self._output: Any = _UNSET
        self._published: dict[str, ArtifactVersion] | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def steps(self) -> list[StepRun]:
        return self.record.steps

    @property
    def metrics(self) -> dict[str, float]:
        """``{"<step>.<metric>": value}``: the last value of each metric its step calls logged.

        A cached call reports the metrics of the execution whose output it reuses; each call's
        full history is ``run.step(name).metric_history(metric)``.
        """
        from mlflowkit.tracking import run_metrics

        return run_metrics(self.record.steps)

    def step(self, name: str) -> StepRun:
        """The record of the step call ``name``."""
        for s in self.record.steps:
            if s.name == name:
                return s
        names = [s.name for s in self.record.steps]
        raise KeyError(f"no step call named {name!r} in run {self.id}; the run has {names}")

    @property
    def published(self) -> dict[str, ArtifactVersion]:
        """The named artifact versions this run published (``mk.publish``), by name.

        A version whose content equalled the latest one is that latest version (no new one).
        """
        if self._published is None:
            self._published = {
                item["name"]: self._version(item["name"], item["version"])
                for item in self.record.published
            }
        return self._published

    @property
    def consumed(self) -> list[ArtifactVersion]:
        """The named artifact versions this run read (``mk.artifact``), in plan order."""
        return [self._version(item["name"], item["version"]) for item in self.record.consumed]

    def _version(self, name: str, version: int) -> ArtifactVersion:
        if self.store is None:
            raise StoreError(f"Run {self.id}: no store to read artifact versions from")
        from mlflowkit.registry.versions import resolve

        return resolve(self.store, f"{name}@{version}")

    @property
    def output(self) -> Any:
        """The pipeline's return value, loaded on first access."""
        if self._output is _UNSET:
            self._output = self._load(self._template)
        return self._output

    def _load_digest(self, digest: str, node: str | None) -> Any:
        if node is not None and node in self._values:
            return self._values[node]
        if self.store is None:
            raise StoreError(
                f"Run {self.id}: output {digest[:12]} is not in memory and the run has no "
                f"store to load it from.",
                digest=digest,
            )
        return self.store.get(digest)

    def _load(self, template: Any) -> Any:
        from mlflowkit.plan import Ref

        if not self._live:
            return self._decode(template)
        # (the template walk every other pass uses: any nesting depth, named tuples, sets)
        return map_leaves(
            template, Ref, lambda ref: self._load_digest(self._digest_of(ref.node), ref.node)
        )

    def _decode(self, data: Any) -> Any:
        """Rebuild the output from a run record's JSON form (see ``driver._output_record``)."""
        if isinstance(data, list):
            return [self._decode(v) for v in data]
        if isinstance(data, dict):
            if set(data) == {"$digest"}:
                return self._load_digest(data["$digest"], None)
            if set(data) == {"$tuple"}:
                return tuple(self._decode(v) for v in data["$tuple"])
            if set(data) == {"$dict"}:
                return {self._decode(k): self._decode(v) for k, v in data["$dict"]}
            return {k: self._decode(v) for k, v in data.items()}
        return data

    def _digest_of(self, node: str) -> str:
        for s in self.record.steps:
            if s.name == node and s.output_digest:
                return s.output_digest
        raise StoreError(f"Run {self.id}: step {node!r} produced no output (status not ok)")

    def __repr__(self) -> str:
        counts = count_calls(self.steps)  # the user's step calls: internal nodes left out
        return (
            f"<mk.Run {self.id} {self.status}: {counts['total']} step calls, "
            f"{describe_calls(counts)}>"
        )

    def _repr_html_(self) -> str:
        from mlflowkit.display import run_html

        return run_html(self)
