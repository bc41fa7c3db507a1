"""Run records, lineage, gc and du of real runs: through the Python API and the command line."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mlflowkit as mk
from mlflowkit.cli import main
from tests.holders import flip_last_byte, held_records
from tests.resources import dag_faults

TRAINING = "tests.resources.dag_faults:training"
EVALUATION = "tests.resources.dag_faults:evaluation"


@pytest.fixture
def counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "counters"
    folder.mkdir()
    monkeypatch.setenv(dag_faults.COUNTERS_ENV, str(folder))
    return folder


def two_pipelines(store: Any) -> tuple[mk.Run, mk.Run]:
    """Run 1 (training) produces the data; run 2 (evaluation) finds it cached and uses it."""
    first = dag_faults.training.plan().run(store=store, progress=False)
    second = dag_faults.evaluation.plan().run(store=store, progress=False)
    assert [(s.name, s.status) for s in first.steps] == [
        ("produce", "executed"),
        ("fit", "executed"),
    ]
    assert [(s.name, s.status) for s in second.steps] == [
        ("produce", "cached"),
        ("consume", "executed"),
    ]
    return first, second


def files(store: Any, area: str) -> list[Path]:
    """The files of one area of a local store (``objects/ab/<digest>``, ``cache/ab/<key>.json``)."""
    return sorted(p for p in Path(store.root, area).rglob("*") if p.is_file())


def assert_du_matches_files(store: Any) -> dict[str, Any]:
    """``du`` counts what is there: files, and the records segment files hold."""
    du = store.du()
    held = held_records(store)
    for area in ("objects", "cache", "runs", "packs"):
        on_disk = files(store, area)
        records = held.get(area, [])
        assert du[area]["count"] == len(on_disk) + len(records), area
        assert du[area]["bytes"] == sum(p.stat().st_size for p in on_disk) + sum(records), area
    segments = files(store, "segments")
    assert du["segments"]["count"] == len(segments)
    assert du["segments"]["bytes"] + sum(held["objects"] + held["cache"]) == sum(
        p.stat().st_size for p in segments
    )
    assert du["total"]["count"] == sum(
        du[a]["count"]
        for a in ("objects", "cache", "segments", "runs", "packs", "quarantine", "tmp")
    )
    return du


# the Python API -----------------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_found_by_prefix(store: Any, counters: Path) -> None:
    first, second = two_pipelines(store)
    third = dag_faults.training.plan(alpha=2.0).run(store=store, progress=False)
    records = store.runs()
    assert [r.id for r in records] == [third.id, second.id, first.id]
    assert [r.pipeline for r in records] == ["training", "evaluation", "training"]
    assert all(r.status == "succeeded" for r in records)
    assert records[0].params == {"n": 1000, "alpha": 2.0}

    found = store.run(second.id[:20])  # a unique prefix: date, time and the start of the tail
    assert found.id == second.id
    assert [(s.name, s.status, s.output_digest) for s in found.steps] == [
        (s.name, s.status, s.output_digest) for s in second.steps
    ]
    assert found.output == {"$digest": second.step("consume").output_digest}
    assert mk.Run(found, store).output == second.output
    common = _common_prefix([first.id, second.id, third.id])
    with pytest.raises(mk.StoreError, match="ambiguous"):
        store.run(common)
    with pytest.raises(mk.StoreError, match="no run"):
        store.run("19990101")


def test_a_run_loaded_from_its_record_has_the_same_output(store: Any, counters: Path) -> None:
    @mk.pipeline
    def shaped(n: int = 4) -> Any:
        x = dag_faults.produce(n)
        return {"sum": dag_faults.consume(x), 1: (dag_faults.consume(x), "label")}

    run = shaped.plan().run(store=store, progress=False)
    assert run.output == {"sum": 3.0, 1: (3.0, "label")}
    later = mk.Run(store.run(run.id), store)  # e.g. in another session
    assert later.output == run.output
    assert type(later.output[1]) is tuple


def _common_prefix(ids: list[str]) -> str:
    prefix = ids[0]
    for other in ids[1:]:
        while not other.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def test_lineage_of_an_output_spans_the_runs_that_made_its_inputs(
    store: Any, counters: Path
) -> None:
    first, second = two_pipelines(store)
    data = second.step("produce").output_digest
    final = second.step("consume").output_digest
    assert data == first.step("produce").output_digest
    graph = store.lineage(final)

    kinds = {node: attrs["kind"] for node, attrs in graph.nodes(data=True)}
    steps = {node for node, kind in kinds.items() if kind == "step"}
    assert steps == {
        (second.id, "consume"),
        (second.id, "produce"),  # found it cached ...
        (first.id, "produce"),  # ... made by the first run of another pipeline
    }
    assert {node for node, kind in kinds.items() if kind == "run"} == {first.id, second.id}
    assert graph.nodes[(first.id, "produce")]["status"] == "executed"
    assert graph.nodes[(second.id, "produce")]["status"] == "cached"
    assert graph.nodes[first.id]["pipeline"] == "training"
    # edges: data -> consume -> final, producer -> data, each step -> its run
    assert graph.has_edge(data, (second.id, "consume"))
    assert graph.edges[data, (second.id, "consume")]["param"] == "x"
    assert graph.has_edge((second.id, "consume"), final)
    assert graph.has_edge((first.id, "produce"), data)
    assert graph.has_edge((first.id, "produce"), first.id)
    n_digest = first.step("produce").inputs["n"]
    assert n_digest == mk.hash_value(1000) and graph.has_edge(n_digest, (first.id, "produce"))
    # only what is upstream: the first run's model is not
    assert first.step("fit").output_digest not in graph
    assert (first.id, "fit") not in graph
    # a unique prefix works too
    assert set(store.lineage(final[:12]).nodes) == set(graph.nodes)


def test_gc_keeps_the_last_run_and_a_rerun_recomputes_only_what_went(
    store: Any, counters: Path
) -> None:
    first, second = two_pipelines(store)
    model = first.step("fit").output_digest
    data = second.step("produce").output_digest
    score = second.step("consume").output_digest
    before = assert_du_matches_files(store)
    assert before["objects"]["count"] == 3 and before["cache"]["count"] == 3
    assert before["runs"]["count"] == 2
    assert before["objects"]["bytes"] > 8000  # the array of 1000 float64

    dry = store.gc(keep_last=1, dry_run=True)
    assert dry.dry_run and (dry.objects_deleted, dry.cache_deleted) == (1, 1)
    assert assert_du_matches_files(store) == before and store.has(model)

    report = store.gc(keep_last=1)
    assert (report.objects_deleted, report.objects_kept) == (1, 2)
    assert (report.cache_deleted, report.cache_kept) == (1, 2)
    assert report.bytes_freed > 0
    assert not store.has(model) and store.has(data) and store.has(score)
    after = assert_du_matches_files(store)
    assert after["objects"]["count"] == 2 and after["cache"]["count"] == 2
    assert after["runs"]["count"] == 2  # records are kept ...
    with pytest.raises(mk.StoreError, match="gc"):  # ... but the first run's output is gone
        mk.Run(store.run(first.id), store).output  # noqa: B018
    assert mk.Run(store.run(second.id), store).output == second.output

    again = dag_faults.training.plan().run(store=store, progress=False)
    assert [(s.name, s.status) for s in again.steps] == [("produce", "cached"), ("fit", "executed")]
    assert again.step("fit").output_digest == model
    assert dag_faults.executions(counters) == {"produce": 1, "fit": 2, "consume": 1}
    assert assert_du_matches_files(store)["objects"]["count"] == 3
    assert store.verify() == []


# the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def invoke(cli: CliRunner, *args: str, ok: bool = True) -> str:
    result = cli.invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.output


def test_cli_runs_list_and_show(tmp_path: Path, cli: CliRunner, counters: Path) -> None:
    url = str(tmp_path / "s")
    invoke(cli, "run", TRAINING, "--store", url)
    invoke(cli, "run", EVALUATION, "--store", url)
    with mk.Store(url) as store:
        second, first = store.runs()
    listing = invoke(cli, "runs", "list", "--store", url)
    assert first.id in listing and second.id in listing
    assert listing.index(second.id) < listing.index(first.id)  # newest first
    assert "training" in listing and "evaluation" in listing and "succeeded" in listing

    shown = invoke(cli, "runs", "show", second.id[:20], "--store", url)
    assert second.id in shown and "evaluation" in shown
    for s in second.steps:
        line = next(li for li in shown.splitlines() if f" {s.name} " in li)
        assert s.status in line and (s.output_digest or "")[:16] in line
    assert f"python {second.environment['python']}" in shown
    invoke(cli, "runs", "show", "19990101", "--store", url, ok=False)


def test_cli_lineage_shows_both_runs(tmp_path: Path, cli: CliRunner, counters: Path) -> None:
    url = str(tmp_path / "s")
    invoke(cli, "run", TRAINING, "--store", url)
    invoke(cli, "run", EVALUATION, "--store", url)
    with mk.Store(url) as store:
        second, first = store.runs()
    final = second.steps[-1].output_digest or ""
    data = second.steps[0].output_digest or ""
    out = invoke(cli, "lineage", final[:12], "--store", url)
    assert final[:16] in out and data[:12] in out
    assert first.id in out and second.id in out
    assert "consume" in out and "produce" in out
    assert "fit" not in out  # not upstream of the score
    bad = invoke(cli, "lineage", "ffffffffffff", "--store", url, ok=False)
    assert "ffffffffffff" in bad


def test_cli_lineage_shows_a_step_call_once_for_all_runs_that_had_it(
    tmp_path: Path, cli: CliRunner, counters: Path
) -> None:
    url = str(tmp_path / "s")
    for _ in range(3):
        invoke(cli, "run", EVALUATION, "--store", url)
    with mk.Store(url) as store:
        third, second, first = store.runs()
    final = third.steps[-1].output_digest or ""
    out = invoke(cli, "lineage", final[:12], "--store", url)
    assert out.count("consume") == 1 and out.count("from produce") == 1
    flat = " ".join(out.split())  # the terminal may wrap long lines
    assert f"executed in run {first.id}" in flat
    assert any(
        f"cached in runs {a}, {b}" in flat
        for a, b in [(second.id, third.id), (third.id, second.id)]
    )


def test_cli_store_verify_lists_a_flipped_object(
    tmp_path: Path, cli: CliRunner, counters: Path
) -> None:
    url = str(tmp_path / "s")
    invoke(cli, "run", EVALUATION, "--store", url)
    assert "all objects verified" in invoke(cli, "store", "verify", "--store", url)
    with mk.Store(url) as store:
        data = store.runs()[0].steps[0].output_digest or ""
        flip_last_byte(store, data)
    out = invoke(cli, "store", "verify", "--store", url, ok=False)
    assert f"corrupt: {data}" in out
    assert "all objects verified" in invoke(cli, "store", "verify", "--store", url)
    # the next run re-executes the producer
    out = invoke(cli, "run", EVALUATION, "--store", url)
    assert "1 executed, 1 cached" in out
    assert dag_faults.executions(counters) == {"produce": 2, "consume": 1}


def test_cli_gc_dry_run_deletes_nothing_and_gc_does(
    tmp_path: Path, cli: CliRunner, counters: Path
) -> None:
    url = str(tmp_path / "s")
    invoke(cli, "run", TRAINING, "--store", url)
    invoke(cli, "run", EVALUATION, "--store", url)
    store = mk.Store(url)
    areas = ("objects", "cache", "segments")
    before = {p: p.read_bytes() for a in areas for p in files(store, a)}
    out = invoke(cli, "store", "gc", "--keep-last", "1", "--dry-run", "--store", url)
    assert "would delete 1 object(s) and 1 cache entries" in out
    assert {p: p.read_bytes() for a in areas for p in files(store, a)} == before
    out = invoke(cli, "store", "gc", "--keep-last", "1", "--store", url)
    assert "deleted 1 object(s) and 1 cache entries" in out
    du = assert_du_matches_files(store)
    assert du["objects"]["count"] == 2 and du["cache"]["count"] == 2
    out = invoke(cli, "store", "gc", "--keep-last", "1", "--store", url)
    assert "deleted 0 object(s) and 0 cache entries" in out
    store.close()


def test_cli_store_du_reports_every_area(tmp_path: Path, cli: CliRunner, counters: Path) -> None:
    url = str(tmp_path / "s")
    invoke(cli, "run", TRAINING, "--store", url)
    usage = json.loads(invoke(cli, "store", "du", "--json", "--store", url))
    with mk.Store(url) as store:
        assert usage == json.loads(json.dumps(assert_du_matches_files(store)))
    assert usage["objects"]["count"] == 2 and usage["runs"]["count"] == 1
    table = invoke(cli, "store", "du", "--store", url)
    for area in ("objects", "cache", "runs", "quarantine", "tmp", "total"):
        assert area in table


def test_cli_plan_explain_says_which_param_changed(
    tmp_path: Path, cli: CliRunner, counters: Path
) -> None:
    url = str(tmp_path / "s")
    invoke(cli, "run", TRAINING, "--store", url)
    same = invoke(cli, "plan", TRAINING, "--explain", "--store", url)
    assert _actions(same) == {"produce": "cached", "fit": "cached"}
    changed = invoke(cli, "plan", TRAINING, "-p", "alpha=0.25", "--explain", "--store", url)
    assert _actions(changed) == {"produce": "cached", "fit": "execute"}
    assert "param 'alpha' changed" in _line(changed, "fit")
    upstream = invoke(cli, "plan", TRAINING, "-p", "n=10", "--explain", "--store", url)
    assert _actions(upstream) == {"produce": "execute", "fit": "execute"}
    assert "param 'n' changed" in _line(upstream, "produce")
    assert "produce" in _line(upstream, "fit").split("execute", 1)[1]  # blamed on upstream


CODE = """\
import mlflowkit as mk


@mk.step
def base(n: int) -> int:
    return n + 1


@mk.step
def top(x: int) -> int:
    return x * 2


@mk.pipeline
def pipe(n: int = 3) -> int:
    return top(base(n))
"""


@pytest.fixture
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A pipeline file the CLI loads by path (as a module named after the file)."""
    name = f"cli_user_{uuid.uuid4().hex[:12]}"
    path = tmp_path / f"{name}.py"
    path.write_text(CODE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield path
    sys.modules.pop(name, None)


def test_cli_plan_explain_says_the_code_changed(
    tmp_path: Path, cli: CliRunner, user_file: Path
) -> None:
    url = str(tmp_path / "s")
    target = f"{user_file}:pipe"
    assert "2 executed, 0 cached" in invoke(cli, "run", target, "--store", url)
    assert _actions(invoke(cli, "plan", target, "--explain", "--store", url)) == {
        "base": "cached",
        "top": "cached",
    }
    # a cosmetic edit changes nothing; a real one re-executes that step (and, here, the next)
    user_file.write_text(CODE.replace("    return n + 1\n", "    # one more\n    return n + 1\n"))
    assert set(_actions(invoke(cli, "plan", target, "--explain", "--store", url)).values()) == {
        "cached"
    }
    user_file.write_text(CODE.replace("    return n + 1\n", "    return n + 100\n"))
    explained = invoke(cli, "plan", target, "--explain", "--store", url)
    assert _actions(explained) == {"base": "execute", "top": "execute"}
    assert "code changed" in _line(explained, "base")
    assert "base" in _line(explained, "top").split("execute", 1)[1]
    out = invoke(cli, "run", target, "--store", url)
    assert "2 executed, 0 cached" in out and "output: 206" in out


def _line(text: str, step: str) -> str:
    return next(li for li in text.splitlines() if li.split()[:1] == [step])


def _actions(text: str) -> dict[str, str]:
    rows = [li.split() for li in text.splitlines()[1:] if li.strip()]
    return {row[0]: row[1] for row in rows}


@pytest.mark.parametrize(
    "args",
    [["runs", "list"], ["runs", "show", "abc"], ["lineage", "abc123"], ["store", "du"]],
    ids=lambda a: " ".join(a),
)
def test_cli_read_commands_never_create_a_store(tmp_path: Path, args: list[str]) -> None:
    url = tmp_path / "not-a-store"
    out = CliRunner().invoke(main, [*args, "--store", str(url)])
    assert out.exit_code == 1
    assert f"no mlflowkit store at {url}" in out.output
    assert "create one by running a pipeline with --store" in out.output
    assert not url.exists()


def test_cli_runs_list_in_a_folder_with_a_tmp_folder_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import time

    monkeypatch.chdir(tmp_path)
    results = tmp_path / "tmp" / "results.csv"
    results.parent.mkdir()
    results.write_text("1,2\n")
    then = time.time() - 3600
    os.utime(results, (then, then))
    out = CliRunner().invoke(main, ["runs", "list", "--store", "."])
    assert out.exit_code == 1 and "no mlflowkit store at" in out.output
    assert results.read_text() == "1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
