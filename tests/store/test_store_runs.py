"""Run records, the SQLite index (sync, rebuild), lineage through the store, gc and du."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from store_helpers import fake_digest

from mlflowkit.errors import StoreError
from mlflowkit.records import CacheEntry, RunRecord, StepRun
from mlflowkit.store import Store
from mlflowkit.store.formats import sign_run, sign_run_parts, unsign_run
from mlflowkit.store.runfiles import ROWS_PER_PART


def step(name: str, out: str | None, key: str | None = None, **inputs: str) -> StepRun:
    return StepRun(
        name=name,
        key=key or fake_digest(f"key-{name}-{out}"),
        status="executed",
        output_digest=out,
        step=f"pkg.mod:{name}",
        inputs=dict(inputs),
    )


def record(run_id: str, started: float, *steps: StepRun, **kw: object) -> RunRecord:
    kw.setdefault("status", "succeeded")
    return RunRecord(
        id=run_id,
        pipeline="pkg.mod:train",
        started_at=started,
        steps=list(steps),
        **kw,  # type: ignore[arg-type]
    )


def two_runs(store: Store) -> dict[str, str]:
    """Run 1 makes data and a model; run 2 reuses the data (cached) for a new model."""
    n = fake_digest("param-n")
    data = store.put([1, 2, 3], fake_digest("data"))
    model1 = store.put({"w": 1}, fake_digest("model1"))
    model2 = store.put({"w": 2}, fake_digest("model2"))
    score2 = store.put(0.9, fake_digest("score2"))
    store.put_run(
        record("20240101-aaaa", 1.0, step("load", data, n=n), step("fit", model1, X=data))
    )
    cached = step("load", data, n=n)
    cached.status = "cached"
    store.put_run(
        record(
            "20240102-bbbb",
            2.0,
            cached,
            step("fit", model2, X=data),
            step("score", score2, model=model2, X=data),
            output={"$digest": score2},
        )
    )
    return {"n": n, "data": data, "model1": model1, "model2": model2, "score2": score2}


def test_runs_newest_first_and_prefix_lookup(any_store: Store) -> None:
    any_store.put_run(record("20240101-aaaa", 1.0))
    any_store.put_run(record("20240102-bbbb", 2.0))
    any_store.put_run(record("20240102-bccc", 3.0))
    assert [r.id for r in any_store.runs()] == ["20240102-bccc", "20240102-bbbb", "20240101-aaaa"]
    assert any_store.run("20240101").id == "20240101-aaaa"
    assert any_store.run("20240102-bb").id == "20240102-bbbb"
    assert any_store.run("20240102-bbbb").id == "20240102-bbbb"
    with pytest.raises(StoreError, match=r"ambiguous.*20240102-bccc.*20240102-bbbb"):
        any_store.run("20240102")
    with pytest.raises(StoreError, match=r"no run 'zzz'.*recent runs: 20240102-bccc"):
        any_store.run("zzz")


def test_run_prefix_is_case_sensitive_and_literal(local_store: Store) -> None:
    local_store.put_run(record("Run_1", 1.0))
    local_store.put_run(record("runX1", 2.0))
    assert local_store.run("Run_").id == "Run_1"
    with pytest.raises(StoreError, match="no run"):
        local_store.run("run_")


def test_unknown_run_in_an_empty_store(any_store: Store) -> None:
    with pytest.raises(StoreError, match="the store has no runs"):
        any_store.run("x1")


def test_put_run_overwrites_and_round_trips(any_store: Store) -> None:
    r = record("r1", 1.0, step("a", fake_digest("x")), params={"n": 3, "alpha": 0.5})
    any_store.put_run(r)
    r.status = "succeeded"
    r.finished_at = 5.0
    any_store.put_run(r)
    assert any_store.run("r1") == r
    assert any_store.runs() == [r]


def test_runs_written_by_another_store_show_up_and_deleted_ones_vanish(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with Store(url) as a, Store(url) as b:
        a.put_run(record("r1", 1.0))
        assert [r.id for r in b.runs()] == ["r1"]
        b.put_run(record("r2", 2.0))
        assert [r.id for r in a.runs()] == ["r2", "r1"]
        # a file rewritten behind the index's back is re-read
        text = json.loads(Path(url, "runs", "r1.json").read_text())
        text["status"] = "failed"
        Path(url, "runs", "r1.json").write_text(json.dumps(text) + " ")
        assert a.run("r1").status == "failed"
        os.remove(Path(url, "runs", "r2.json"))
        assert [r.id for r in a.runs()] == ["r1"]


def test_unreadable_run_file_is_skipped_in_listing(local_store: Store) -> None:
    local_store.put_run(record("good", 1.0))
    Path(local_store.root, "runs", "bad.json").write_text("{ not json")
    assert [r.id for r in local_store.runs()] == ["good"]


def test_reindex_after_deleting_the_index_gives_the_same_answers(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with Store(url) as store:
        ids = two_runs(store)
        store.put_cache(CacheEntry(key=fake_digest("k1"), output_digest=ids["data"]))
        runs_before = store.runs()
        du_before = store.du()
        lineage_before = store.lineage(ids["score2"])
    index = Path(url, "index.sqlite")
    assert index.exists()
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    with Store(url) as store:  # rebuilt transparently on first use
        assert store.runs() == runs_before
        assert store.du() == du_before
        lineage_after = store.lineage(ids["score2"])
        assert dict(lineage_after.nodes(data=True)) == dict(lineage_before.nodes(data=True))
        assert set(lineage_after.edges) == set(lineage_before.edges)
        assert store.reindex() == {"objects": 4, "cache": 1, "runs": 2}
        assert store.du() == du_before


def test_index_deleted_under_an_open_store_is_rebuilt(local_store: Store) -> None:
    two_runs(local_store)
    before = local_store.runs()
    local_store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(local_store.root, "index.sqlite" + suffix).unlink(missing_ok=True)
    assert local_store.runs() == before


def test_garbage_index_file_is_replaced(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with Store(url) as store:
        store.put_run(record("r1", 1.0))
    index = Path(url, "index.sqlite")
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    with Store(url) as store:
        assert [r.id for r in store.runs()] == ["r1"]
    conn = sqlite3.connect(index)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_remote_store_index_lives_in_the_cache_dir(memory_store: Store) -> None:
    memory_store.put_run(record("r1", 1.0))
    assert memory_store.runs()[0].id == "r1"
    index_file = memory_store._idx().path  # type: ignore[attr-defined]  # a SqliteIndex
    assert os.path.exists(index_file)
    assert not index_file.startswith("/mk-test")


# lineage ---------------------------------------------------------------------------------------


def test_lineage_links_runs_through_shared_artifacts(any_store: Store) -> None:
    ids = two_runs(any_store)
    g = any_store.lineage(ids["score2"])
    kinds = {n: a["kind"] for n, a in g.nodes(data=True)}
    steps = {n for n, k in kinds.items() if k == "step"}
    assert steps == {
        ("20240102-bbbb", "score"),
        ("20240102-bbbb", "fit"),
        ("20240101-aaaa", "load"),
        ("20240102-bbbb", "load"),
    }
    assert {n for n, k in kinds.items() if k == "run"} == {"20240101-aaaa", "20240102-bbbb"}
    # upstream only: run 1's model is not upstream of run 2's score
    assert ids["model1"] not in g
    assert g.has_edge(ids["data"], ("20240102-bbbb", "score"))
    assert g.has_edge(("20240101-aaaa", "load"), ids["data"])
    assert g.has_edge(("20240101-aaaa", "load"), "20240101-aaaa")
    assert g.nodes[ids["data"]]["names"] == ["load"]
    assert g.nodes[("20240102-bbbb", "load")]["status"] == "cached"


def test_lineage_by_prefix_and_unknown_digest(local_store: Store) -> None:
    ids = two_runs(local_store)
    g = local_store.lineage(ids["model1"][:12])
    assert ids["model1"] in g
    with pytest.raises(StoreError, match="no run produced"):
        local_store.lineage(fake_digest("nothing"))


def test_lineage_of_a_stored_value_no_run_produced(local_store: Store) -> None:
    d = local_store.put(5, fake_digest("orphan"))
    g = local_store.lineage(d)
    assert list(g.nodes) == [d]


# gc and du -------------------------------------------------------------------------------------


def test_gc_keeps_recent_runs_and_pins(any_store: Store) -> None:
    keep = []
    for i in range(5):
        out = any_store.put(i, fake_digest(f"out{i}"))
        key = fake_digest(f"key{i}")
        any_store.put_cache(CacheEntry(key=key, output_digest=out))
        any_store.put_run(record(f"r{i}", float(i), step("s", out, key=key)))
        keep.append((out, key))
    pinned_by_record = any_store.put("p", fake_digest("pinned-rec"))
    any_store.put_run(record("r-old-pin", -1.0, pins=[pinned_by_record]))
    pinned = keep[0][0]
    orphan = any_store.put("orphan", fake_digest("orphan"))

    dry = any_store.gc(keep_last=2, pins=[pinned], dry_run=True)
    # objects: out1, out2 and the orphan; cache: key1, key2 (a pinned output keeps its entry)
    assert dry.dry_run and dry.objects_deleted == 3 and dry.cache_deleted == 2
    assert any_store.has(orphan)

    report = any_store.gc(keep_last=2, pins=[pinned])
    assert (report.objects_deleted, report.cache_deleted) == (3, 2)
    assert report.bytes_freed > 0
    for i, (out, key) in enumerate(keep):
        alive = i >= 3 or out == pinned
        assert any_store.has(out) == alive, i
        assert (any_store.get_cache(key) is not None) == alive, i
    assert any_store.has(pinned_by_record)
    assert not any_store.has(orphan)
    assert any_store.du()["objects"]["count"] == 4


def test_gc_keeps_output_templates(any_store: Store) -> None:
    final = any_store.put("final", fake_digest("final"))
    now = time.time()
    any_store.put_run(record("r2", now + 2, output={"a": [{"$digest": final}], "n": 3}))
    any_store.put_run(record("r3", now + 3))
    any_store.gc(keep_last=1)  # keeps r3 only
    assert not any_store.has(final)
    any_store.put("final", final)
    any_store.gc(keep_last=2)  # r2 and its output template are kept now
    assert any_store.has(final)


def test_gc_keeps_running_runs_but_not_crashed_ones(local_store: Store) -> None:
    final = local_store.put("final", fake_digest("final"))
    in_flight = local_store.put("partial", fake_digest("partial"))
    long_ago = time.time() - 3 * 86400
    for d in (final, in_flight):  # written before the running run started
        os.utime(Path(local_store.root, "objects", d[:2], d), (long_ago, long_ago))
    running = record("r1", time.time(), step("s", in_flight), status="running")
    stale = record("r0", long_ago, step("s", final), status="running")  # crashed elsewhere
    stale.owner = {"host": "another-host", "pid": 1}
    local_store.put_run(stale)
    local_store.put_run(running)  # owned by this (live) process
    local_store.put_run(record("r3", time.time() + 3))
    local_store.gc(keep_last=1)  # keeps r3, and r1 because it is still running
    assert local_store.has(in_flight)
    assert not local_store.has(final)


def test_gc_older_than_spares_young_files(local_store: Store) -> None:
    d = local_store.put("young", fake_digest("young"))
    assert local_store.gc(keep_last=0, older_than=3600).objects_deleted == 0
    assert local_store.has(d)
    path = Path(local_store.root, "objects", d[:2], d)
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert local_store.gc(keep_last=0, older_than=3600).objects_deleted == 1


def test_gc_removes_quarantine(local_store: Store) -> None:
    Path(local_store.root, "quarantine", "abc.1").write_bytes(b"x" * 10)
    report = local_store.gc()
    assert report.quarantine_deleted == 1 and report.bytes_freed >= 10


def test_gc_refuses_negative_keep_last(local_store: Store) -> None:
    with pytest.raises(StoreError, match="keep_last"):
        local_store.gc(keep_last=-1)


def test_du_counts_every_area(any_store: Store) -> None:
    two_runs(any_store)
    any_store.put_cache(CacheEntry(key=fake_digest("k"), output_digest=fake_digest("data")))
    du = any_store.du()
    assert du["objects"]["count"] == 4 and du["objects"]["bytes"] > 0
    assert du["cache"]["count"] == 1
    assert du["runs"]["count"] == 2
    assert du["quarantine"] == {"count": 0, "bytes": 0}
    assert du["total"]["count"] == 7
    assert du["total"]["bytes"] == sum(
        du[a]["bytes"] for a in ("objects", "cache", "runs", "quarantine", "tmp")
    )


def test_a_running_record_is_a_started_file_until_the_run_ends(local_store: Store) -> None:
    runs = Path(local_store.root, "runs")
    local_store.put_run(record("r1", 1.0, status="running"))
    assert [p.name for p in runs.iterdir()] == ["r1.started"]
    assert [(r.id, r.status) for r in local_store.runs()] == [("r1", "running")]
    assert local_store.du()["runs"]["count"] == 1
    local_store.put_run(record("r1", 1.0, status="succeeded"))
    assert [p.name for p in runs.iterdir()] == ["r1.json"]
    assert local_store.run("r1").status == "succeeded"
    # a crash between the two writes leaves both: the finished record wins
    (runs / "r1.started").write_bytes(
        (runs / "r1.json").read_bytes().replace(b"succeeded", b"running")
    )
    assert [(r.id, r.status) for r in local_store.runs()] == [("r1", "succeeded")]


def _long_record(run_id: str, n: int, status: str = "executed") -> RunRecord:
    """A finished record of ``n`` steps whose rows vary (metrics, errors, upstream lists)."""
    steps = []
    for i in range(n):
        s = step(f"s{i}", fake_digest(f"out-{i}"), x=fake_digest(f"in-{i}"))
        s.status = status  # type: ignore[assignment]
        s.duration_s = i / 7
        if i % 3 == 0:
            s.metric_log = {"loss": [[0, 1.0 / (i + 1)], [1, 0.5]]}
        if i % 5 == 0:
            s.upstream = {"xs": [fake_digest(f"up-{i}"), fake_digest(f"up2-{i}")]}
        if i % 11 == 0:
            s.error, s.traceback = f"ValueError: bad é {i}", "Traceback\n  ...\n"
        steps.append(s)
    return record(run_id, 1.0, *steps, params={"n": n}, output={"$digest": fake_digest("o")})


@pytest.mark.parametrize("n", [0, 1, ROWS_PER_PART, 3 * ROWS_PER_PART + 5])
def test_a_record_written_in_pieces_is_byte_for_byte_the_one_encoded_in_one_go(
    any_store: Store, n: int
) -> None:
    objects, guard = any_store.seams.objects, any_store.seams.guard
    signed = _long_record("r-signed", n)  # a step executed: signed
    cached = _long_record("r-cached", n, status="cached")  # fully cached: not signed
    any_store.put_run(signed)
    any_store.put_run(cached)
    one_go = orjson.dumps(signed.to_stored())
    written = objects.read(f"{objects.root}/runs/r-signed.json")
    if n:
        assert written == sign_run(one_go, guard.sign_document("run"))
        body, block, digest = unsign_run(written or b"")
        assert body == one_go and block is not None
        assert guard.document_problem("run", digest, block) is None
    else:  # no step executed: not signed
        assert written == one_go
    assert objects.read(f"{objects.root}/runs/r-cached.json") == orjson.dumps(cached.to_stored())
    assert any_store.run("r-signed").to_dict() == signed.to_dict()
    assert any_store.run("r-cached").to_dict() == cached.to_dict()
    assert any_store.verify() == []


@given(
    data=st.binary(max_size=300).map(lambda b: b"{" + b.hex().encode() + b"}"),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=6),
)
def test_signing_a_record_in_pieces_equals_signing_it_whole(data: bytes, cuts: list[int]) -> None:
    def sign(digest: bytes) -> bytes:
        return digest * 3  # a 96-byte block, as a signature block is

    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    parts = [memoryview(data)[a:b] for a, b in itertools.pairwise(bounds)]
    assert b"".join(sign_run_parts(parts, sign)) == sign_run(data, sign)


def test_signing_pieces_that_are_not_a_json_object_is_refused() -> None:
    with pytest.raises(ValueError, match="must end with"):
        list(sign_run_parts([b'{"a":', b"1"], lambda d: d * 3))


def test_a_step_row_that_is_not_json_able_fails_the_write_and_leaves_no_file(
    local_store: Store,
) -> None:
    rec = _long_record("r-bad", ROWS_PER_PART + 2)
    rec.steps[-1].inputs = {"x": object()}  # type: ignore[dict-item]
    with pytest.raises(StoreError, match="not JSON-able"):
        local_store.put_run(rec)
    assert not list(Path(local_store.root, "runs").glob("r-bad*"))
    assert not list(Path(local_store.root, "tmp").glob("*"))
