from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import mlflowkit as mk
from mlflowkit.records import CacheEntry, RunRecord, StepRun, output_digests

_text = st.text(max_size=20)
_steps = st.builds(
    StepRun,
    name=_text,
    key=st.none() | _text,
    status=st.sampled_from(["cached", "executed", "failed", "skipped"]),
    attempts=st.integers(0, 5),
    duration_s=st.floats(0, 1e6, allow_nan=False),
    output_digest=st.none() | _text,
    error=st.none() | _text,
    step=_text,
    code_digest=st.none() | _text,
    inputs=st.dictionaries(_text, _text, max_size=3),
    started_at=st.none() | st.floats(0, 2e9, allow_nan=False),
    traceback=st.none() | _text,
)


def test_step_run_to_dict_covers_every_field() -> None:
    assert set(StepRun("a").to_dict()) == {f.name for f in fields(StepRun)}


@given(st.lists(_steps, max_size=4), st.dictionaries(_text, st.integers(), max_size=3))
def test_run_records_round_trip(steps: list[StepRun], params: dict[str, int]) -> None:
    record = RunRecord(id="r1", pipeline="p", params=params, steps=steps, status="succeeded")
    data = record.to_dict()
    assert set(data) == {f.name for f in fields(RunRecord)}
    assert RunRecord.from_dict(data) == record
    assert data["steps"] is not record.steps


@given(
    st.lists(_steps, max_size=4),
    st.dictionaries(_text, st.integers(-(2**63), 2**63 - 1), max_size=3),  # as the runner keeps
)
def test_the_stored_layout_round_trips_through_json(
    steps: list[StepRun], params: dict[str, int]
) -> None:
    import orjson

    record = RunRecord(id="r1", pipeline="p", params=params, steps=steps, status="succeeded")
    stored = orjson.loads(orjson.dumps(record.to_stored()))
    assert stored["step_fields"] == [f.name for f in fields(StepRun)]
    assert all(isinstance(row, list) for row in stored["steps"])
    assert RunRecord.from_dict(stored) == record
    legacy = orjson.loads(orjson.dumps(record.to_dict()))  # records written before step rows
    assert RunRecord.from_dict(legacy) == record


def test_stored_rows_with_unknown_or_missing_columns_still_read() -> None:
    data = {
        "id": "r1",
        "pipeline": "p",
        "step_fields": ["name", "status", "a_future_field"],
        "steps": [["s", "executed", 42]],
    }
    (step,) = RunRecord.from_dict(data).steps
    assert step == StepRun(name="s", status="executed")


def test_cache_entries_round_trip() -> None:
    entry = CacheEntry(key="k" * 64, output_digest="d" * 64, meta={"len": 3}, stored=False)
    assert set(entry.to_dict()) == {f.name for f in fields(CacheEntry)}
    assert CacheEntry.from_dict(entry.to_dict()) == entry


def test_internal_nodes_are_recognized() -> None:
    assert StepRun("x.0", step="mlflowkit.plan:_op_getitem@getitem").internal
    assert not StepRun("fit", step="my.module:fit").internal


def test_cached_property() -> None:
    assert StepRun("a", status="cached").cached
    assert not StepRun("a", status="executed").cached


def test_parameters_json_cannot_hold_exactly_are_recorded_by_repr(tmp_path: Path) -> None:
    from mlflowkit.driver import _jsonable

    assert _jsonable({"a": float("nan"), "b": 2**70, "c": [1, 2.5, "x"], "d": None}) == {
        "a": "nan",
        "b": repr(2**70),
        "c": [1, 2.5, "x"],
        "d": None,
    }
    from tests.resources import dag_runs

    run = dag_runs.uncached.plan(x=2**70).run(store=str(tmp_path / "store"), progress=False)
    assert run.output == dag_runs.side_effect.fn(2**70)
    with mk.Store(str(tmp_path / "store")) as store:
        assert store.run(run.id).params == {"x": repr(2**70)}


def test_output_digests_lists_the_digest_leaves_of_an_output_template_in_order() -> None:
    template = {
        "model": {"$digest": "a" * 64},
        "scores": [{"$digest": "b" * 64}, 0.5, {"$digest": "a" * 64}],
        "plain": {"$digest": "c" * 64, "note": "not a leaf: two keys"},
    }
    assert output_digests(template) == ["a" * 64, "b" * 64, "a" * 64]
    assert output_digests({"$digest": 3}) == []  # not a digest
    assert output_digests(None) == []


def test_calls_without_upstream_structures_share_one_read_only_empty_upstream() -> None:
    import copy
    import json
    import pickle

    import pytest

    from mlflowkit.records import NO_UPSTREAM

    a, b = StepRun("a"), StepRun("b")
    assert a.upstream is b.upstream is NO_UPSTREAM and a.upstream == {}  # not a dict per call
    with pytest.raises(TypeError, match="assign a new dict"):
        a.upstream["xs"] = ["d"]
    with pytest.raises(TypeError):
        a.upstream.update(xs=["d"])
    assert b.upstream == {}
    a.upstream = {"xs": ["d1", "d2"]}  # what the scheduler does for a structure argument
    assert a.upstream == {"xs": ["d1", "d2"]} and b.upstream == {}
    for copied in (pickle.loads(pickle.dumps(b)), copy.deepcopy(b), StepRun.from_dict(b.to_dict())):
        assert copied == b and copied.upstream is NO_UPSTREAM
    assert StepRun.from_dict(a.to_dict()) == a
    assert json.loads(json.dumps(b.to_dict()))["upstream"] == {}
