"""OpenLineage events of a run: START and COMPLETE/FAIL for the pipeline and each step call.

Used by the driver only when the OpenLineage client is configured by its own conventions
(``OPENLINEAGE_URL``, ``openlineage.yml``; see ``mlflowkit.integrations``); the events go
through ``openlineage.client.OpenLineageClient``, so every transport it offers works. Needs the
extra ``pip install 'mlflowkit[openlineage]'``; this module is the only one that imports it.

What is emitted
---------------
* The pipeline run: START when the run starts; COMPLETE or FAIL (with an ``errorMessage``
  facet) when it ends. Job ``<pipeline>`` in the namespace ``$OPENLINEAGE_NAMESPACE`` (default
  ``mlflowkit``); its outputs are the objects the pipeline returns.
* Each step call that ran or was a cache hit (internal nodes and skipped calls left out):
  START and COMPLETE or FAIL, emitted from the run record when the run ends, with the times
  recorded (``eventTime``). Job ``<pipeline>.<call>``; facets ``parent`` (the pipeline run),
  ``jobType``, ``sourceCodeLocation`` (the step function's file and line, the git commit as
  version), ``mlflowkit_code`` (code digest and step identity) and ``mlflowkit_step`` (status,
  cache key, attempts). Input datasets are the outputs of the calls it consumed (through
  ``ref[i]`` and fan-out gathers), output dataset its own output.
* Datasets are stored objects: namespace the store's URL (``file:///...`` for a local folder),
  name the named artifact's name when the run published or consumed the object as a version
  of one (with a ``version`` facet holding the version number), else the object's content
  digest.

Invariants
----------
* Run ids are UUIDs derived from the mlflowkit run id (and the call's name): sending a run's
  events again names the same runs.
* A lineage failure never fails a run: the first error sending events is reported as a
  warning, and that run sends no more.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import uuid
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    RunFacet,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    processing_engine_run,
    source_code_location_job,
)

from mlflowkit.records import output_digests

if TYPE_CHECKING:
    from mlflowkit.plan import TracedPlan
    from mlflowkit.records import RunRecord, StepRun
    from mlflowkit.step import Step
    from mlflowkit.store.base import ArtifactStore

__all__ = ["PRODUCER", "MlflowkitCodeJobFacet", "MlflowkitStepRunFacet", "RunEmitter", "run_uuid"]


def _version() -> str:
    from mlflowkit.version import __version__

    return __version__


#: Who made the events (OpenLineage ``producer``): this version of mlflowkit.
PRODUCER = f"https://pypi.org/project/mlflowkit/{_version()}/"
#: Where mlflowkit's own facets are described.
FACETS_SCHEMA = "https://pypi.org/project/mlflowkit/#openlineage-facets"
_UUID_NAMESPACE = uuid.UUID("5f1b8a52-3c4e-4d0a-9c0e-6d1f0a7b2e91")


@attr.define
class MlflowkitCodeJobFacet(JobFacet):
    """The code a step call ran: its code digest and step identity (``module:qualname``)."""

    codeDigest: str | None
    step: str

    @staticmethod
    def _get_schema() -> str:
        return FACETS_SCHEMA + "-code"


@attr.define
class MlflowkitStepRunFacet(RunFacet):
    """How a step call ended in an mlflowkit run: status, cache key, attempts, output digest."""

    mlflowkitRunId: str
    call: str
    status: str
    cacheKey: str | None
    attempts: int
    outputDigest: str | None
    _additional_skip_redact: ClassVar[list[str]] = ["call", "status", "cacheKey", "outputDigest"]

    @staticmethod
    def _get_schema() -> str:
        return FACETS_SCHEMA + "-step"


@attr.define
class MlflowkitRunFacet(RunFacet):
    """The mlflowkit run behind a pipeline run: its id, executor, git commit and parameters."""

    mlflowkitRunId: str
    executor: str
    gitCommit: str | None
    params: dict[str, Any]

    @staticmethod
    def _get_schema() -> str:
        return FACETS_SCHEMA + "-run"


def run_uuid(run_id: str, call: str | None = None) -> str:
    """The OpenLineage run id of an mlflowkit run (``call=None``) or of one of its calls."""
    return str(uuid.uuid5(_UUID_NAMESPACE, run_id if call is None else f"{run_id}/{call}"))


def _iso(seconds: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int(seconds % 1 * 1000):03d}Z"
    )


def store_namespace(url: str) -> str:
    """The dataset namespace naming a store: its URL, ``file://`` + the path for a folder."""
    if "://" in url:
        return url.rstrip("/")
    return "file://" + os.path.abspath(url).rstrip("/")


class RunEmitter:
    """Sends the OpenLineage events of one run (see the module docstring)."""

    def __init__(self, plan: TracedPlan, store: ArtifactStore, record: RunRecord) -> None:
        self.record = record
        self.namespace = os.environ.get("OPENLINEAGE_NAMESPACE") or "mlflowkit"
        self.datasets = store_namespace(str(store.url))
        self.steps: dict[str, Step[Any, Any]] = {
            node.step.qualified_name: node.step for node in plan.nodes.values()
        }
        self.failed = False
        self.client: Any = None
        self.named: dict[str, tuple[str, int]] = {}  # digest -> (artifact name, version)

    # -- sending --------------------------------------------------------------------------
    def _emit(self, events: Iterable[RunEvent]) -> None:
        if self.failed:
            return
        try:
            if self.client is None:
                self.client = OpenLineageClient()
            for event in events:
                self.client.emit(event)
        except Exception as exc:
            self.failed = True
            warnings.warn(
                f"Run {self.record.id}: OpenLineage events could not be sent ({type(exc).__name__}:"
                f" {exc}); the run itself is not affected. Check OPENLINEAGE_URL / openlineage.yml,"
                f" or set OPENLINEAGE_DISABLED=true.",
                UserWarning,
                stacklevel=2,
            )

    def started(self) -> None:
        """The run starts: the pipeline's START event."""
        self._emit([self._pipeline_event(RunState.START, self.record.started_at)])

    def finished(self, record: RunRecord) -> None:
        """The run ended (its record is final): the step calls' events, then the pipeline's."""
        self.record = record
        for v in (*record.consumed, *record.published):
            self.named[str(v["digest"])] = (str(v["name"]), int(v["version"]))
        events = []
        for s in self._calls(record):
            events += self._step_events(s)
        ended = record.finished_at or time.time()
        state = RunState.COMPLETE if record.status == "succeeded" else RunState.FAIL
        events.append(self._pipeline_event(state, ended))
        self._emit(events)
        if self.client is not None and not self.failed:
            with contextlib.suppress(Exception):  # closing only waits for queued events
                self.client.close(timeout=30.0)

    # -- building -------------------------------------------------------------------------
    @staticmethod
    def _calls(record: RunRecord) -> list[StepRun]:
        return [s for s in record.steps if not s.internal and s.status != "skipped"]

    def _pipeline_event(self, state: RunState, at: float) -> RunEvent:
        record = self.record
        env = record.environment
        facets: dict[str, RunFacet] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=_version(), name="mlflowkit", openlineageAdapterVersion=_client_version()
            ),
            "mlflowkit_run": MlflowkitRunFacet(
                mlflowkitRunId=record.id,
                executor=record.executor,
                gitCommit=env.get("git_commit"),
                params=dict(record.params),
            ),
        }
        outputs = []
        if state != RunState.START:
            failed = next((s for s in record.steps if s.status == "failed"), None)
            if state == RunState.FAIL:
                message = (failed.error if failed else None) or "the run failed"
                facets["errorMessage"] = _error(message, failed.traceback if failed else None)
            outputs = [self._output(d) for d in dict.fromkeys(output_digests(record.output))]
        job_facets: dict[str, JobFacet] = {"jobType": _job_type("PIPELINE")}
        return RunEvent(
            eventType=state,
            eventTime=_iso(at),
            run=Run(runId=run_uuid(record.id), facets=facets),
            job=Job(namespace=self.namespace, name=record.pipeline, facets=job_facets),
            producer=PRODUCER,
            inputs=[],
            outputs=outputs,
        )

    def _step_events(self, s: StepRun) -> list[RunEvent]:
        record = self.record
        began = s.started_at or record.started_at
        ended = began + s.duration_s
        job = Job(
            namespace=self.namespace, name=f"{record.pipeline}.{s.name}", facets=self._job_facets(s)
        )
        parent = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run_uuid(record.id)),
            job=parent_run.Job(namespace=self.namespace, name=record.pipeline),
            root=parent_run.Root(
                run=parent_run.RootRun(runId=run_uuid(record.id)),
                job=parent_run.RootJob(namespace=self.namespace, name=record.pipeline),
            ),
        )
        facets: dict[str, RunFacet] = {
            "parent": parent,
            "mlflowkit_step": MlflowkitStepRunFacet(
                mlflowkitRunId=record.id,
                call=s.name,
                status=s.status,
                cacheKey=s.key,
                attempts=s.attempts,
                outputDigest=s.output_digest,
            ),
        }
        inputs = [self._input(d) for d in self._consumed(s)]
        start = RunEvent(
            eventType=RunState.START,
            eventTime=_iso(began),
            run=Run(runId=run_uuid(record.id, s.name), facets=dict(facets)),
            job=job,
            producer=PRODUCER,
            inputs=inputs,
            outputs=[],
        )
        if s.status == "failed":
            facets["errorMessage"] = _error(s.error or "failed", s.traceback)
            state, outputs = RunState.FAIL, []
        else:
            state = RunState.COMPLETE
            outputs = [self._output(s.output_digest)] if s.output_digest else []
        end = RunEvent(
            eventType=state,
            eventTime=_iso(ended),
            run=Run(runId=run_uuid(record.id, s.name), facets=facets),
            job=job,
            producer=PRODUCER,
            inputs=inputs,
            outputs=outputs,
        )
        return [start, end]

    def _job_facets(self, s: StepRun) -> dict[str, JobFacet]:
        facets: dict[str, JobFacet] = {
            "jobType": _job_type("STEP"),
            "mlflowkit_code": MlflowkitCodeJobFacet(codeDigest=s.code_digest, step=s.step),
        }
        where = _source(self.steps.get(s.step))
        if where is not None:
            path, line = where
            commit = self.record.environment.get("git_commit")
            facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
                type="git" if commit else "file",
                url=f"file://{path}#L{line}",
                path=path,
                version=commit,
            )
        return facets

    def _consumed(self, s: StepRun) -> list[str]:
        """Digests of the call outputs ``s`` consumed, seen through internal nodes."""
        record = self.record
        made = {c.output_digest for c in record.steps if not c.internal and c.output_digest}
        through: dict[str, list[str]] = {}
        for c in record.steps:
            if c.internal and c.output_digest:
                through[c.output_digest] = _given(c)
        found: dict[str, None] = {}
        stack = list(reversed(_given(s)))
        seen: set[str] = set()
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            if digest in made:
                found.setdefault(digest)
            elif digest in through:
                stack.extend(reversed(through[digest]))
        return list(found)

    def _input(self, digest: str) -> InputDataset:
        name, facets = self._dataset(digest)
        return InputDataset(namespace=self.datasets, name=name, facets=facets)

    def _output(self, digest: str) -> OutputDataset:
        name, facets = self._dataset(digest)
        return OutputDataset(namespace=self.datasets, name=name, facets=facets)

    def _dataset(self, digest: str) -> tuple[str, dict[str, DatasetFacet]]:
        """A dataset's name (a named artifact's, else the digest) and its facets."""
        named = self.named.get(digest)
        if named is None:
            return digest, {}
        name, version = named
        return name, {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(version)
            )
        }


def _given(s: StepRun) -> list[str]:
    """The digests a call was given: each parameter's, and those nested in structures."""
    out = [d for d in s.inputs.values() if isinstance(d, str)]
    for digests in s.upstream.values():
        out += digests
    return out


def _job_type(kind: str) -> job_type_job.JobTypeJobFacet:
    return job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="MLFLOWKIT", jobType=kind
    )


def _error(message: str, stack: str | None) -> error_message_run.ErrorMessageRunFacet:
    return error_message_run.ErrorMessageRunFacet(
        message=message, programmingLanguage="python", stackTrace=stack
    )


def _source(step: Step[Any, Any] | None) -> tuple[str, int] | None:
    """The file and first line of a step's function, when Python knows them."""
    if step is None:
        return None
    try:
        fn = inspect.unwrap(step.fn)
        path = inspect.getsourcefile(fn)
        line = fn.__code__.co_firstlineno
    except (TypeError, AttributeError, OSError):
        return None
    return (os.path.abspath(path), int(line)) if path else None


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openlineage-python")
    except PackageNotFoundError:
        return "unknown"
