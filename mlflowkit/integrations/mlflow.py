"""Export runs to MLflow: each run an MLflow run, each step call a nested run.

``export(store, tracking_uri)`` reads run records and writes them through ``MlflowClient`` to
any MLflow tracking URI (a tracking server, ``sqlite:///...``, a folder). Needs the extra
``pip install 'mlflowkit[mlflow]'``; this module is the only one that imports MLflow.

What a run becomes
------------------
* A run: an MLflow run in the experiment ``experiment`` (default: one per pipeline, named
  after it), named ``"<pipeline> <run id>"``, with the run's start and end times and status
  (``succeeded`` -> FINISHED, ``failed`` -> FAILED); the pipeline parameters as params (JSON
  text for what is not a string); every metric of its step calls as ``<step>.<metric>`` with
  its whole history (``[i]`` of a fan-out element written ``/i``: MLflow keys allow no
  brackets); tags ``mlflowkit.run_id``, ``mlflowkit.pipeline``, ``mlflowkit.executor``,
  ``mlflowkit.status``, the git commit (``mlflow.source.git.commit`` and
  ``mlflowkit.git_commit``), the Python and mlflowkit versions, and the code digest of each
  step (``mlflowkit.code.<module>/<qualname>``).
* A step call (internal nodes left out): a nested run (``mlflow.parentRunId``) named after the
  call, with its metrics and their history under their own names, its input digests as params
  ``input.<parameter>``, and tags for its status, cache key, code digest and output digest.

Invariants
----------
* Exporting twice creates nothing new: a run already exported to the experiment (found by its
  ``mlflowkit.run_id`` tag) is left as it is and its MLflow id returned. An export cut short
  (no ``mlflowkit.exported`` tag yet) is deleted, nested runs included, and done again.
* Runs still marked ``running`` are not exported (they are, once they have finished).

What a named artifact becomes
-----------------------------
* A registered model named after it (``/`` of a namespace written ``.``: MLflow model names
  allow no slash), tagged ``mlflowkit.name``; each version a model version linked to the
  exported run that published it, tagged ``mlflowkit.artifact_version`` (mlflowkit's number, which
  MLflow's own numbering need not match) and ``mlflowkit.digest``; each stage an alias
  (``poc``, ``prototype``, ``mvp``) on the version holding it now. A version already exported
  (found by its ``mlflowkit.artifact_version`` tag) is not made again; aliases follow the stages on
  every export. Exporting chosen ``runs`` exports only the versions those runs published.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import MlflowkitError

if TYPE_CHECKING:
    from mlflowkit.records import RunRecord, StepRun

__all__ = ["export"]

#: The tag that names the mlflowkit run an MLflow run was exported from.
RUN_ID_TAG = "mlflowkit.run_id"
#: ``"run"`` on the run of a pipeline, ``"step"`` on the nested run of a step call.
KIND_TAG = "mlflowkit.kind"
#: Set last, once a run and its nested runs are written whole.
DONE_TAG = "mlflowkit.exported"

_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "running": "RUNNING"}
_STEP_STATUS = {"executed": "FINISHED", "cached": "FINISHED", "failed": "FAILED"}
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")
_MAX_PARAM = 6000  # MLflow's longest param value
_MAX_TAG = 8000  # and tag value
_BATCH = 1000  # metrics per log_batch
_BATCH_TAGS = 100  # params, and tags, per log_batch


def export(
    store: Any,
    tracking_uri: str,
    *,
    experiment: str | None = None,
    runs: Iterable[str] | None = None,
) -> dict[str, str]:
    """Export runs of ``store`` to the MLflow tracking URI ``tracking_uri``.

    Parameters
    ----------
    store:
        A ``mk.Store``, a store URL, or None for the default store.
    tracking_uri:
        Where MLflow keeps runs: ``http://host:5000`` (a tracking server), ``sqlite:///mlflow.db``
        or a folder.
    experiment:
        The MLflow experiment to export to (created if needed); default: one experiment per
        pipeline, named after the pipeline.
    runs:
        Ids (or unique prefixes) of the runs to export; default: every finished run.

    Returns
    -------
    dict[str, str]
        mlflowkit run id -> MLflow run id, for every run exported now or before.

    Raises
    ------
    MlflowkitError
        MLflow is not installed (``pip install 'mlflowkit[mlflow]'``).
    mlflowkit.StoreError
        A run id is unknown or an ambiguous prefix.
    """
    client = _client(tracking_uri)
    from mlflowkit.store import open_store

    the_store = open_store(store)
    records = the_store.runs() if runs is None else [the_store.run(r) for r in runs]
    records = sorted(
        (r for r in records if r.status != "running"), key=lambda r: (r.started_at, r.id)
    )
    experiments: dict[str, tuple[str, dict[str, tuple[str, bool]]]] = {}
    exported: dict[str, str] = {}
    for record in records:
        name = experiment or record.pipeline
        if name not in experiments:
            experiment_id = _experiment(client, name)
            experiments[name] = (experiment_id, _exported_runs(client, experiment_id))
        experiment_id, known = experiments[name]
        found = known.get(record.id)
        if found is not None and found[1]:
            exported[record.id] = found[0]
            continue
        if found is not None:  # an export cut short: start it again
            _delete(client, experiment_id, record.id, found[0])
        exported[record.id] = _export_run(client, experiment_id, record)
        known[record.id] = (exported[record.id], True)
    _export_versions(client, the_store, exported, every=runs is None)
    return exported


#: Tags of a registered model version: the artifact's version number and content digest.
VERSION_TAG = "mlflowkit.artifact_version"
DIGEST_TAG = "mlflowkit.digest"


def model_name(name: str) -> str:
    """The MLflow registered model name of the named artifact ``name``."""
    return name.replace("/", ".")


def _export_versions(client: Any, store: Any, exported: dict[str, str], *, every: bool) -> None:
    """Registered model versions for the store's named artifact versions, stages as aliases."""
    from mlflowkit.registry.names import STAGES

    for name in store.artifacts():
        versions = [v for v in store.versions(name) if every or v.run_id in exported]
        if not versions:
            continue
        model = model_name(name)
        if not client.search_registered_models(filter_string=f"name = '{model}'"):
            client.create_registered_model(model, tags={"mlflowkit.name": name})
        known = {
            mv.tags.get(VERSION_TAG): str(mv.version)
            for mv in client.search_model_versions(f"name = '{model}'")
        }
        for v in versions:
            if str(v.version) in known:
                continue
            made = client.create_model_version(
                model,
                source=f"mlflowkit:{v.spec}",
                run_id=exported.get(v.run_id) if v.run_id else None,
                tags={VERSION_TAG: str(v.version), DIGEST_TAG: v.digest},
                description=json.dumps(v.metadata, sort_keys=True) if v.metadata else None,
            )
            known[str(v.version)] = str(made.version)
        for stage in STAGES:
            holder = store.stage(name, stage)
            if holder is not None and str(holder.version) in known:
                client.set_registered_model_alias(model, stage, known[str(holder.version)])


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowkitError(
            "Exporting to MLflow needs the mlflow package, which is not installed: expected it "
            "to be importable, found none. Install the extra: pip install 'mlflowkit[mlflow]'."
        ) from exc
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment(client: Any, name: str) -> str:
    """The id of the experiment ``name``, created (or restored from deleted) if needed."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return str(client.create_experiment(name))
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


def _exported_runs(client: Any, experiment_id: str) -> dict[str, tuple[str, bool]]:
    """mlflowkit run id -> (MLflow run id, exported whole) of the runs already in MLflow."""
    out: dict[str, tuple[str, bool]] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'run'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            run_id = tags.get(RUN_ID_TAG)
            if run_id and (run_id not in out or not out[run_id][1]):
                out[run_id] = (run.info.run_id, tags.get(DONE_TAG) == "complete")
        token = page.token
        if not token:
            return out


def _delete(client: Any, experiment_id: str, run_id: str, mlflow_id: str) -> None:
    for child in client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}' and tags.`{KIND_TAG}` = 'step'",
        max_results=50_000,
    ):
        client.delete_run(child.info.run_id)
    client.delete_run(mlflow_id)


def _ms(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1000)


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow metric, param or tag key: ``evaluate[3].accuracy`` ->
    ``evaluate/3.accuracy``; any other character MLflow refuses becomes ``_``."""
    key = re.sub(r"\[(\d+)\]", r"/\1", name)
    key = _BAD_KEY_CHARS.sub("_", key)
    key = re.sub(r"/{2,}", "/", key).strip("/")
    return key[:250] or "_"


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _run_tags(record: RunRecord) -> dict[str, str]:
    env = record.environment
    tags = {
        RUN_ID_TAG: record.id,
        KIND_TAG: "run",
        "mlflowkit.pipeline": record.pipeline,
        "mlflowkit.executor": record.executor,
        "mlflowkit.status": record.status,
        "mlflowkit.python": str(env.get("python", "")),
        "mlflowkit.version": str(env.get("mlflowkit", "")),
    }
    commit = env.get("git_commit")
    if commit:
        tags["mlflow.source.git.commit"] = tags["mlflowkit.git_commit"] = str(commit)
    for s in record.steps:
        if s.code_digest and not s.internal and s.step:
            tags[mlflow_key("mlflowkit.code." + s.step.replace(":", "/"))] = s.code_digest
    return tags


def _step_tags(record: RunRecord, s: StepRun, parent: str) -> dict[str, str]:
    tags = {
        "mlflow.parentRunId": parent,
        RUN_ID_TAG: record.id,
        KIND_TAG: "step",
        "mlflowkit.step": s.name,
        "mlflowkit.step_identity": s.step,
        "mlflowkit.status": s.status,
        "mlflowkit.attempts": str(s.attempts),
    }
    for tag, value in (
        ("mlflowkit.cache_key", s.key),
        ("mlflowkit.code_digest", s.code_digest),
        ("mlflowkit.output_digest", s.output_digest),
        ("mlflowkit.error", s.error),
    ):
        if value:
            tags[tag] = _text(value, _MAX_TAG)
    return tags


def _metrics(s: StepRun, prefix: str, timestamp: int) -> list[Any]:
    from mlflow.entities import Metric

    out = []
    seen: set[tuple[str, int, float]] = set()
    for name, points in (s.metric_log or {}).items():
        key = mlflow_key(prefix + name)
        for step, value in points:
            point = (key, int(step), value)
            if point not in seen:  # MLflow keeps one of equal points
                seen.add(point)
                out.append(Metric(key, value, timestamp, int(step)))
    return out


def _log(
    client: Any, run_id: str, metrics: Sequence[Any], params: dict[str, str], tags: dict[str, str]
) -> None:
    """Everything in batches MLflow accepts (at most 1000 metrics, 100 params, 100 tags)."""
    from mlflow.entities import Param, RunTag

    plist = [Param(k, v) for k, v in params.items()]
    tlist = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, max(len(plist), len(tlist)), _BATCH_TAGS):
        client.log_batch(run_id, params=plist[i : i + _BATCH_TAGS], tags=tlist[i : i + _BATCH_TAGS])
    for i in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH])


def _export_run(client: Any, experiment_id: str, record: RunRecord) -> str:
    """Write one run and its step calls; return the MLflow id of the run."""
    start = _ms(record.started_at)
    end = _ms(record.finished_at or record.started_at)
    parent = client.create_run(
        experiment_id,
        start_time=start,
        tags={RUN_ID_TAG: record.id, KIND_TAG: "run"},
        run_name=f"{record.pipeline} {record.id}",
    ).info.run_id
    calls = [s for s in record.steps if not s.internal]
    metrics = []
    for s in calls:
        metrics += _metrics(
            s, f"{s.name}.", _ms((s.started_at or record.started_at) + s.duration_s)
        )
    params = {mlflow_key(k): _text(v, _MAX_PARAM) for k, v in record.params.items()}
    _log(client, parent, metrics, params, _run_tags(record))
    for s in calls:
        began = _ms(s.started_at or record.started_at)
        finished = _ms((s.started_at or record.started_at) + s.duration_s)
        child = client.create_run(
            experiment_id,
            start_time=began,
            tags=_step_tags(record, s, parent),
            run_name=s.name,
        ).info.run_id
        inputs = {mlflow_key(f"input.{k}"): v for k, v in s.inputs.items()}
        _log(client, child, _metrics(s, "", finished), inputs, {})
        client.set_terminated(child, _STEP_STATUS.get(s.status, "KILLED"), finished)
    client.set_terminated(parent, _STATUS.get(record.status, "FAILED"), end)
    client.set_tag(parent, DONE_TAG, "complete")
    return str(parent)
