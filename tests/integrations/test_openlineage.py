"""OpenLineage events of runs, received by a real HTTP server and checked against the spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from mlflowkit.integrations import openlineage_configured
from tests.integrations.conftest import LineageReceiver
from tests.resources import dag_tracking as dt

ROOT = Path(__file__).resolve().parents[2]


def _datasets(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in items]


def _by_job(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e["job"]["name"], []).append(e["eventType"])
    return out


def test_a_run_emits_start_and_complete_for_the_pipeline_and_each_call(
    lineage_receiver: LineageReceiver, store: Any
) -> None:
    run = dt.experiment.plan().run(store=store, progress=False)
    events = lineage_receiver.events
    assert set(lineage_receiver.paths) == {"/api/v1/lineage"}
    assert _by_job(events) == {
        "experiment": ["START", "COMPLETE"],
        "experiment.train": ["START", "COMPLETE"],
        "experiment.evaluate": ["START", "COMPLETE"],
        "experiment.quiet": ["START", "COMPLETE"],
    }
    assert events[0]["job"]["name"] == "experiment" and events[0]["eventType"] == "START"
    assert events[-1]["job"]["name"] == "experiment" and events[-1]["eventType"] == "COMPLETE"
    namespace = "file://" + os.path.abspath(str(store.url))
    pipeline = events[-1]
    pipeline_run = pipeline["run"]["runId"]
    assert uuid.UUID(pipeline_run)
    assert pipeline["run"]["facets"]["mlflowkit_run"]["mlflowkitRunId"] == run.id
    commit = run.record.environment["git_commit"]
    assert commit and pipeline["run"]["facets"]["mlflowkit_run"]["gitCommit"] == commit
    assert _datasets(pipeline["outputs"]) == [(namespace, run.step("quiet").output_digest)]

    calls = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    train, evaluate = calls["experiment.train"], calls["experiment.evaluate"]
    assert train["run"]["facets"]["parent"]["run"]["runId"] == pipeline_run
    parent_job = train["run"]["facets"]["parent"]["job"]
    assert (parent_job["namespace"], parent_job["name"]) == ("mlflowkit", "experiment")
    code = train["job"]["facets"]["mlflowkit_code"]
    assert code["codeDigest"] == run.step("train").code_digest
    assert code["step"] == "tests.resources.dag_tracking:train"
    location = train["job"]["facets"]["sourceCodeLocation"]
    assert location["path"] == str(ROOT / "tests" / "resources" / "dag_tracking.py")
    assert location["url"].startswith("file://") and location["version"] == commit
    assert train["run"]["facets"]["mlflowkit_step"]["cacheKey"] == run.step("train").key
    # lineage: train's output is evaluate's input, evaluate's output is quiet's input
    assert _datasets(train["outputs"]) == [(namespace, run.step("train").output_digest)]
    assert _datasets(evaluate["inputs"]) == _datasets(train["outputs"])
    assert _datasets(calls["experiment.quiet"]["inputs"]) == _datasets(evaluate["outputs"])
    # each call's START and COMPLETE name the same run, at the recorded times
    starts = {e["job"]["name"]: e for e in events if e["eventType"] == "START"}
    assert starts["experiment.train"]["run"]["runId"] == train["run"]["runId"]
    assert starts["experiment.train"]["eventTime"] <= train["eventTime"]


def test_a_failed_run_emits_fail_with_the_error(
    lineage_receiver: LineageReceiver, store: Any
) -> None:
    with pytest.raises(mk.RunFailed):
        dt.mistyped.plan().run(store=store, progress=False)
    assert _by_job(lineage_receiver.events) == {
        "mistyped": ["START", "FAIL"],
        "mistyped.wrong_type": ["START", "FAIL"],
    }
    fail = lineage_receiver.events[-1]
    error = fail["run"]["facets"]["errorMessage"]
    assert "TypeCheckError" in error["message"] and error["programmingLanguage"] == "python"


def test_inputs_are_seen_through_items_and_fan_out_gathers(
    lineage_receiver: LineageReceiver, store: Any
) -> None:
    @mk.step
    def pair() -> tuple[int, int]:
        return 1, 2

    @mk.step
    def add(a: int, b: int) -> int:
        return a + b

    @mk.step
    def total(xs: list[int]) -> int:
        return sum(xs)

    @mk.pipeline
    def shapes() -> int:
        a, b = pair()
        return total(add.map(a=[a, b], b=[a, a]))

    run = shapes.plan().run(store=store, progress=False)
    calls = {e["job"]["name"]: e for e in lineage_receiver.events if e["eventType"] == "COMPLETE"}
    made_by_pair = [d["name"] for d in calls["shapes.pair"]["outputs"]]
    assert made_by_pair == [run.step("pair").output_digest]
    assert [d["name"] for d in calls["shapes.add[0]"]["inputs"]] == made_by_pair
    assert [d["name"] for d in calls["shapes.total"]["inputs"]] == [
        run.step("add[0]").output_digest,
        run.step("add[1]").output_digest,
    ]


def test_cached_calls_emit_too_and_run_ids_are_stable(
    lineage_receiver: LineageReceiver, store: Any
) -> None:
    first = dt.experiment.plan().run(store=store, progress=False)
    del lineage_receiver.events[:]
    again = dt.experiment.plan().run(store=store, progress=False)
    calls = [e for e in lineage_receiver.events if e["job"]["name"] != "experiment"]
    assert len(calls) == 6
    assert {e["run"]["facets"]["mlflowkit_step"]["status"] for e in calls} == {"cached"}
    from mlflowkit.integrations.openlineage import run_uuid

    assert lineage_receiver.events[0]["run"]["runId"] == run_uuid(again.id) != run_uuid(first.id)


def test_nothing_is_imported_or_sent_when_openlineage_is_not_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    code = (
        "import json, sys\n"
        "import mlflowkit as mk\n"
        "from mlflowkit.integrations import openlineage_configured\n"
        "from tests.resources import dag_tracking as dt\n"
        f"dt.experiment.plan().run(store=mk.Store({str(tmp_path / 's')!r}), progress=False)\n"
        "print(json.dumps([openlineage_configured(), 'openlineage' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    assert json.loads(out.stdout) == [False, False]


def test_the_client_conventions_decide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OPENLINEAGE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert not openlineage_configured()
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert openlineage_configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not openlineage_configured()
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    (tmp_path / "openlineage.yml").unlink()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    assert openlineage_configured()


def test_an_unreachable_receiver_warns_and_the_run_succeeds(
    monkeypatch: pytest.MonkeyPatch, store: Any
) -> None:
    pytest.importorskip("openlineage.client")
    from tests.integrations.conftest import free_port

    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.warns(UserWarning, match="OpenLineage events could not be sent"):
        run = dt.experiment.plan().run(store=store, progress=False)
    assert run.status == "succeeded" and run.metrics


# --- every event against the OpenLineage JSON schema -------------------------------------------
#: A folder holding the OpenLineage spec: ``OpenLineage.json`` and ``facets/*.json`` (the
#: ``spec/`` folder of the OpenLineage repository). The client package does not ship it.
SPEC_ENV = "MLFLOWKIT_OPENLINEAGE_SPEC"


def _spec_folder() -> Path:
    for candidate in (os.environ.get(SPEC_ENV), str(ROOT / "shared" / "openlineage-spec")):
        if candidate and (Path(candidate) / "OpenLineage.json").is_file():
            return Path(candidate)
    pytest.skip(
        f"the OpenLineage JSON schema is not here: set {SPEC_ENV} to a folder holding "
        "OpenLineage.json and facets/*.json (the spec/ folder of the OpenLineage repository)"
    )


def _validator(spec: Path) -> Any:
    """Validates an event against the spec, and each standard facet against its own schema."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT202012

    schemas = [json.loads((spec / "OpenLineage.json").read_text())]
    schemas += [json.loads(p.read_text()) for p in sorted((spec / "facets").glob("*.json"))]
    registry = referencing.Registry().with_resources(
        (s["$id"], DRAFT202012.create_resource(s)) for s in schemas
    )
    by_file = {s["$id"].rsplit("/", 1)[-1]: s["$id"] for s in schemas[1:]}
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def check(schema_ref: str, instance: Any) -> None:
        validator = jsonschema.Draft202012Validator(
            {"$ref": schema_ref}, registry=registry, format_checker=checker
        )
        validator.validate(instance)

    def validate(event: dict[str, Any]) -> int:
        check(schemas[0]["$id"] + "#/$defs/RunEvent", event)
        checked = 1
        facet_groups = [event["run"].get("facets", {}), event["job"].get("facets", {})]
        for dataset in event.get("inputs", []) + event.get("outputs", []):
            facet_groups.append(dataset.get("facets", {}))
        for facets in facet_groups:
            for facet in facets.values():
                url = facet["_schemaURL"]
                if not url.startswith("https://openlineage.io/spec/facets/"):
                    continue  # mlflowkit's own facets: checked as BaseFacets above
                path, _, pointer = url.partition("#")
                check(by_file[path.rsplit("/", 1)[-1]] + "#" + pointer, facet)
                checked += 1
        return checked

    return validate


def test_every_event_fits_the_openlineage_schema(
    lineage_receiver: LineageReceiver, store: Any
) -> None:
    validate = _validator(_spec_folder())
    dt.experiment.plan().run(store=store, progress=False)
    dt.experiment.plan().run(store=store, progress=False)  # cached calls
    dt.fan.plan(n=3).run(store=store, progress=False)
    with pytest.raises(mk.RunFailed):
        dt.mistyped.plan().run(store=store, progress=False)
    events = lineage_receiver.events
    assert len(events) == 8 + 8 + 8 + 4
    checked = sum(validate(e) for e in events)
    standard = {
        name for e in events for group in (e["run"]["facets"], e["job"]["facets"]) for name in group
    }
    assert {
        "parent",
        "jobType",
        "sourceCodeLocation",
        "errorMessage",
        "processing_engine",
    } <= standard
    assert checked > len(events)


@mk.step
def make_rows(n: int) -> list[int]:
    return list(range(n))


@mk.step
def count_rows(rows: list[int]) -> int:
    return len(rows)


@mk.pipeline
def producing(n: int = 3) -> list[int]:
    return mk.publish("rows", make_rows(n))


@mk.pipeline
def consuming() -> int:
    return count_rows(mk.artifact("rows"))


def test_published_and_consumed_versions_are_datasets_named_after_the_artifact(
    lineage_receiver: LineageReceiver, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOWKIT_STORE", str(store.url))  # where mk.artifact looks
    producing.plan(n=3).run(store=store, progress=False)
    made = {e["job"]["name"]: e for e in lineage_receiver.events if e["eventType"] == "COMPLETE"}
    (output,) = made["producing.make_rows"]["outputs"]
    assert output["name"] == "rows"
    assert output["facets"]["version"]["datasetVersion"] == "1"
    lineage_receiver.events.clear()
    consuming.plan().run(store=store, progress=False)
    used = {e["job"]["name"]: e for e in lineage_receiver.events if e["eventType"] == "COMPLETE"}
    (given,) = used["consuming.count_rows"]["inputs"]
    assert (given["name"], given["facets"]["version"]["datasetVersion"]) == ("rows", "1")
    assert given["namespace"] == output["namespace"]  # the same dataset, across pipelines
