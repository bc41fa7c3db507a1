"""The store's two seam contracts as pytest test classes, for built-in backends and plugins.

Check your own implementation by subclassing and saying how to build a fresh, empty one::

    from mlflowkit.testing import IndexContract, ObjectStoreContract

    class TestMyObjects(ObjectStoreContract):
        def make_objects(self, tmp_path):
            return MyObjects(f"bucket/test-{tmp_path.name}")

    class TestMyIndex(IndexContract):
        def make_index(self, tmp_path):
            return MyIndex(dsn, schema=tmp_path.name)

Every test gets a fresh, empty implementation (``make_objects`` / ``make_index``, or override
the ``objects`` / ``index`` fixture when building one needs other fixtures).

Invariants the suites check
---------------------------
``ObjectStoreContract`` (:class:`mlflowkit.store.objects.ObjectStore`):

* A missing file reads as None, does not exist, has no age, and lists as nothing.
* ``write_atomic`` writes all its parts, replaces a whole file, and a concurrent reader sees
  the old bytes or the new bytes, never a mix or a part.
* ``create_exclusive`` creates once: of many threads racing, exactly one wins, and the file
  holds the winner's bytes.
* ``remove``, ``move`` and ``restore`` report whether they acted; ``restore`` never overwrites.
* ``listdir`` lists the files directly in a folder; ``walk`` the ``ab/<name>`` fan-out below
  it, sorted; names are relative; a rewritten file changes its (size, stamp).

``IndexContract`` (:class:`mlflowkit.store.index.Index`):

* A new index is not built until ``rebuild``; ``rebuild(clear=True)`` drops the rows that
  cache the files and keeps the registry's.
* Object and cache rows are found by digest and removed by key; run rows follow a listing of
  run files (read again only when a file's size or stamp changed), newest first.
* Lineage walks step inputs transitively across runs.
* A registry transaction is all or nothing and exclusive: numbers taken in racing
  transactions are all distinct; a taken number is refused, never overwritten.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlflowkit.errors import StoreError
from mlflowkit.records import CacheEntry, RunRecord, StepRun
from mlflowkit.store.index import (
    Index,
    ObjectRow,
    PackedRow,
    PromotionRow,
    RegistryTransaction,
    RunFile,
    VersionRow,
)
from mlflowkit.store.objects import ObjectStore

__all__ = ["IndexContract", "ObjectStoreContract"]


class ObjectStoreContract:
    """The objects seam's contract (see the module docstring); subclass it to run it."""

    def make_objects(self, tmp_path: Path) -> ObjectStore:
        """A fresh, empty implementation whose files live under its ``root``."""
        raise NotImplementedError("override make_objects() (or the objects fixture)")

    @pytest.fixture
    def objects(self, tmp_path: Path) -> ObjectStore:
        return self.make_objects(tmp_path)

    def test_it_implements_the_protocol(self, objects: ObjectStore) -> None:
        assert isinstance(objects, ObjectStore)
        assert isinstance(objects.root, str)
        assert isinstance(objects.local, bool)

    def test_a_missing_file_reads_as_none(self, objects: ObjectStore) -> None:
        path = f"{objects.root}/cache/ab/missing.json"
        assert objects.read(path) is None
        assert objects.read_split(path, 16) is None
        assert not objects.exists(path)
        assert objects.age(path) is None
        assert objects.listdir(f"{objects.root}/cache") == []
        assert objects.walk(f"{objects.root}/cache") == []
        assert objects.remove(path) is False

    def test_write_atomic_writes_every_part_and_replaces_a_whole_file(
        self, objects: ObjectStore
    ) -> None:
        path = f"{objects.root}/objects/ab/abcdef"
        objects.write_atomic(path, (b"head|", bytearray(b"mid|"), memoryview(b"tail")), False)
        assert objects.read(path) == b"head|mid|tail"
        assert objects.exists(path)
        age = objects.age(path)
        assert age is not None
        assert 0.0 <= age < 60.0
        objects.write_atomic(path, (b"x",), True)
        assert objects.read(path) == b"x"

    def test_read_split_gives_the_head_and_the_rest(self, objects: ObjectStore) -> None:
        path = f"{objects.root}/objects/cd/cdef01"
        data = bytes(range(256)) * 600  # larger than any read buffer
        objects.write_atomic(path, (data,), False)
        got = objects.read_split(path, 100)
        assert got is not None
        first, rest = got
        try:
            assert data.startswith(first)
            assert len(first) >= 100
            tail = rest.read() if rest is not None else b""
        finally:
            if rest is not None:
                rest.close()
        assert first + tail == data

    def test_a_reader_never_sees_a_partial_write(self, objects: ObjectStore) -> None:
        path = f"{objects.root}/runs/r1.json"
        versions = [bytes([i]) * 200_000 for i in (1, 2)]
        objects.write_atomic(path, (versions[0],), False)
        stop = threading.Event()
        seen: list[bytes] = []

        def read() -> None:
            while not stop.is_set():
                data = objects.read(path)
                assert data is not None
                seen.append(data[:1] + data[-1:] + len(data).to_bytes(4, "big"))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for i in range(30):
                objects.write_atomic(path, (versions[i % 2],), False)
        finally:
            stop.set()
            reader.join()
        for s in seen:
            assert s[0] == s[1]
            assert int.from_bytes(s[2:], "big") == 200_000

    def test_create_exclusive_creates_once(self, objects: ObjectStore) -> None:
        path = f"{objects.root}/locks/k.lock"
        assert objects.create_exclusive(path, b"first") is True
        assert objects.create_exclusive(path, b"second") is False
        assert objects.read(path) == b"first"

    def test_of_racing_threads_exactly_one_creates(self, objects: ObjectStore) -> None:
        path = f"{objects.root}/policy/00000001.json"
        start = threading.Barrier(8)
        won: list[int] = []

        def race(i: int) -> None:
            start.wait()
            if objects.create_exclusive(path, f"writer {i}".encode()):
                won.append(i)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        assert objects.read(path) == f"writer {won[0]}".encode()

    def test_remove_move_and_restore_report_what_they_did(self, objects: ObjectStore) -> None:
        a, b = f"{objects.root}/locks/a.lock", f"{objects.root}/locks/b.lock"
        objects.write_atomic(a, (b"A",), False)
        assert objects.move(a, b) is True
        assert objects.read(a) is None
        assert objects.read(b) == b"A"
        assert objects.move(a, b) is False  # the source is gone
        objects.write_atomic(a, (b"new",), False)
        assert objects.restore(b, a) is False  # never over an existing file
        assert objects.read(a) == b"new"
        assert objects.read(b) == b"A"
        assert objects.remove(a) is True
        assert objects.restore(b, a) is True
        assert objects.read(a) == b"A"
        assert not objects.exists(b)
        objects.write_atomic(b, (b"over",), False)
        assert objects.move(b, a) is True  # move replaces
        assert objects.read(a) == b"over"
        assert objects.remove(a) is True
        assert objects.remove(a) is False

    def test_listdir_lists_the_files_directly_in_a_folder(self, objects: ObjectStore) -> None:
        runs = f"{objects.root}/runs"
        objects.write_atomic(f"{runs}/r1.json", (b"12345",), False)
        objects.write_atomic(f"{runs}/r2.started", (b"1",), False)
        objects.write_atomic(f"{runs}/deeper/x.json", (b"1",), False)
        listed = {f.name: f.size for f in objects.listdir(runs)}
        assert listed == {"r1.json": 5, "r2.started": 1}

    def test_walk_lists_the_fan_out_sorted(self, objects: ObjectStore) -> None:
        folder = f"{objects.root}/objects"
        for name in ("cd/cd02", "ab/ab01", "ab/ab00"):
            objects.write_atomic(f"{folder}/{name}", (name.encode(),), False)
        assert [f.name for f in objects.walk(folder)] == ["ab/ab00", "ab/ab01", "cd/cd02"]
        assert objects.own_dir(folder)

    def test_subfolders_name_every_folder_holding_files(self, objects: ObjectStore) -> None:
        folder = f"{objects.root}/cache"
        assert objects.subfolders(folder) in (set(), None)  # missing: nothing below it
        for name in ("ab/ab01.json", "cd/cd02.json", "cd/cd03.json"):
            objects.write_atomic(f"{folder}/{name}", (b"{}",), False)
        objects.write_atomic(f"{folder}/plain", (b"x",), False)
        listed = objects.subfolders(folder)
        assert listed is None or {"ab", "cd"} <= listed  # more may be listed, never fewer
        assert objects.remove(f"{folder}/ab/ab01.json")
        listed = objects.subfolders(folder)
        assert listed is None or "cd" in listed

    def test_a_rewritten_file_changes_its_size_or_stamp(self, objects: ObjectStore) -> None:
        runs = f"{objects.root}/runs"
        objects.write_atomic(f"{runs}/r1.json", (b"short",), False)
        (before,) = objects.listdir(runs)
        objects.write_atomic(f"{runs}/r1.json", (b"a longer record",), False)
        (after,) = objects.listdir(runs)
        assert (before.size, before.stamp) != (after.size, after.stamp)

    def test_sync_returns(self, objects: ObjectStore) -> None:
        objects.write_atomic(f"{objects.root}/tmpfile", (b"x",), False)
        objects.sync()
        assert objects.read(f"{objects.root}/tmpfile") == b"x"


def _run(run_id: str, started: float, steps: list[StepRun]) -> tuple[RunFile, str]:
    record = RunRecord(run_id, "pipe", status="succeeded", started_at=started, steps=steps)
    text = json.dumps(record.to_stored())
    return RunFile(run_id, len(text), f"stamp-{started}"), text


def _version(name: str, number: int, digest: str = "d" * 64) -> VersionRow:
    return VersionRow(name, number, digest, None, "2026-01-01T00:00:00Z", None, "{}", b"rec")


def _promotion(name: str, version: int, seq: int | None = None) -> PromotionRow:
    return PromotionRow(
        seq, name, version, None, "poc", "2026-01-01T00:00:00Z", None, "", "[]", None
    )


class IndexContract:
    """The index seam's contract (see the module docstring); subclass it to run it."""

    def make_index(self, tmp_path: Path) -> Index:
        """A fresh, empty index."""
        raise NotImplementedError("override make_index() (or the index fixture)")

    @pytest.fixture
    def index(self, tmp_path: Path) -> Iterator[Index]:
        idx = self.make_index(tmp_path)
        yield idx
        idx.close()

    # lifecycle -------------------------------------------------------------------------------
    def test_a_new_index_is_built_by_a_rebuild(self, index: Index) -> None:
        assert isinstance(index, Index)
        assert not index.is_built()
        assert not index.replaced()
        index.rebuild([], [], [], clear=False)
        assert index.is_built()

    # objects and cache entries ---------------------------------------------------------------
    def test_cache_rows_are_found_by_output_and_removed_by_key(self, index: Index) -> None:
        out = "ab" + "0" * 62
        index.add_batch(
            [ObjectRow(out, 10, "json", 1.0)],
            [(CacheEntry("k1", out), 50), (CacheEntry("k2", out), 50), (CacheEntry("k3", "c1"), 9)],
        )
        assert sorted(index.cache_keys_for(out)) == ["k1", "k2"]
        index.remove_cache(["k1"])
        assert index.cache_keys_for(out) == ["k2"]
        assert index.digests_with_prefix("ab0") == [out]
        index.remove_objects([out])
        assert index.digests_with_prefix("ab0") == []

    def test_packed_segments_lists_each_segment_once_while_it_holds_a_record(
        self, index: Index
    ) -> None:
        segs = [f"{i:02x}" + "9" * 62 for i in (7, 0, 255, 16)]
        for n, seg in enumerate(segs):
            index.add_batch(
                [], [], [PackedRow(f"c:{n}-{j}", seg, j, 1, "a" * 64) for j in range(n + 2)]
            )
        assert index.packed_segments() == set(segs)
        index.remove_cache([f"0-{j}" for j in range(2)])  # every record of segs[0]
        assert index.packed_segments() == set(segs[1:])
        index.remove_cache([f"{n}-{j}" for n in range(1, 4) for j in range(n + 2)])
        assert index.packed_segments() == set()

    def test_segment_places_are_found_and_go_with_their_object_or_entry(self, index: Index) -> None:
        out, seg = "ab" + "1" * 62, "cd" + "2" * 62
        index.add_batch(
            [ObjectRow(out, 10, "json", 1.0)],
            [(CacheEntry("k1", out), 50)],
            [PackedRow(f"o:{out}", seg, 0, 10, "e" * 64), PackedRow("c:k1", seg, 10, 50, "f" * 64)],
        )
        assert index.find_packed(f"o:{out}") == PackedRow(f"o:{out}", seg, 0, 10, "e" * 64)
        assert index.find_packed("c:k1") == PackedRow("c:k1", seg, 10, 50, "f" * 64)
        assert index.find_packed("c:nope") is None
        assert index.packed_segments() == {seg}
        many = index.find_packed_many(
            [f"o:{out}", "c:nope", "c:k1"] + [f"c:x{i}" for i in range(600)]
        )
        assert sorted(many) == ["c:k1", f"o:{out}"]
        assert many["c:k1"] == PackedRow("c:k1", seg, 10, 50, "f" * 64)
        index.add_batch([], [], [PackedRow("c:k1", "ef" + "3" * 62, 0, 50, "f" * 64)])
        found = index.find_packed("c:k1")
        assert found is not None
        assert found.segment == "ef" + "3" * 62  # the newest place wins
        index.remove_cache(["k1"])
        assert index.find_packed("c:k1") is None
        assert index.find_packed(f"o:{out}") is not None
        index.remove_objects([out])
        assert index.find_packed(f"o:{out}") is None
        index.rebuild([], [], [], clear=False, packed=[PackedRow("c:k2", seg, 0, 1, "a" * 64)])
        assert index.find_packed("c:k2") is not None
        index.rebuild([], [], [], clear=True)
        assert index.find_packed("c:k2") is None

    def test_rebuild_with_clear_drops_file_rows_and_keeps_the_registry(self, index: Index) -> None:
        index.rebuild(
            [ObjectRow("ab01", 1, "json", 1.0)], [(CacheEntry("k1", "ab01"), 5)], [], clear=False
        )
        index.registry(lambda tx: tx.insert_version(_version("model", 1, "ab01")))
        index.rebuild([], [], [_run("r1", 1.0, [])], clear=True)
        assert index.cache_keys_for("ab01") == []
        assert index.digests_with_prefix("ab") == []
        assert index.run_ids() == ["r1"]
        assert [r.version for r in index.version_rows("model")] == [1]
        assert index.published_digests() == ["ab01"]

    # runs ------------------------------------------------------------------------------------
    def test_run_rows_follow_the_listing_of_run_files(self, index: Index) -> None:
        files = dict(_run(i, t, []) for i, t in (("r1", 1.0), ("r2", 2.0), ("x3", 3.0)))
        by_id = {f.run_id: (f, text) for f, text in files.items()}
        reads: list[str] = []

        def read(run_id: str) -> str | None:
            reads.append(run_id)
            return by_id[run_id][1]

        index.sync_runs([f for f, _ in by_id.values()], read)
        assert sorted(reads) == ["r1", "r2", "x3"]
        assert index.run_ids() == ["x3", "r2", "r1"]  # newest first
        assert index.run_ids("r") == ["r2", "r1"]
        assert [r.id for r in index.run_records()] == ["x3", "r2", "r1"]
        assert [r.id for r in index.run_records(["r1", "x3", "nope"])] == ["x3", "r1"]
        reads.clear()
        index.sync_runs([f for f, _ in by_id.values()], read)
        assert reads == []  # nothing changed: nothing read
        changed, text = _run("r1", 4.0, [])
        by_id["r1"] = (changed, text)
        index.sync_runs([by_id["r1"][0], by_id["r2"][0]], read)  # r1 changed, x3 gone
        assert reads == ["r1"]
        assert index.run_ids() == ["r1", "r2"]

    def test_a_run_file_that_cannot_be_read_is_skipped(self, index: Index) -> None:
        f, _ = _run("r1", 1.0, [])
        index.sync_runs([f], lambda run_id: None)
        assert index.run_ids() == []
        index.sync_runs([f], lambda run_id: "{not json")
        assert index.run_ids() == []

    def test_lineage_walks_inputs_across_runs(self, index: Index) -> None:
        d0, d1, d2, other = "d0" * 32, "d1" * 32, "d2" * 32, "ee" * 32
        r1 = _run("r1", 1.0, [StepRun("make", output_digest=d1, inputs={"x": d0})])
        r2 = _run("r2", 2.0, [StepRun("use", output_digest=d2, inputs={"a": d1})])
        r3 = _run("r3", 3.0, [StepRun("else", output_digest=other)])
        texts = {f.run_id: t for f, t in (r1, r2, r3)}
        index.sync_runs([r1[0], r2[0], r3[0]], texts.get)
        assert index.upstream_runs(d2) == {"r1", "r2"}
        assert index.upstream_runs(d1) == {"r1"}
        assert index.upstream_runs(d0) == set()
        assert index.digests_with_prefix("d2d2") == [d2]

    # the registry ----------------------------------------------------------------------------
    def test_an_empty_registry_reads_as_empty(self, index: Index) -> None:
        assert index.version_rows() == []
        assert index.promotion_rows("model") == []
        assert index.stage_rows() == []
        assert index.published_digests() == []

    def test_a_version_number_is_taken_once(self, index: Index) -> None:
        assert index.registry(lambda tx: tx.insert_version(_version("model", 1))) is True
        assert index.registry(lambda tx: tx.insert_version(_version("model", 1, "e" * 64))) is False
        assert index.registry(lambda tx: tx.insert_version(_version("model", 2, "e" * 64))) is True
        assert index.registry(lambda tx: tx.insert_version(_version("data", 1))) is True
        rows = index.version_rows()
        assert [(r.name, r.version) for r in rows] == [("data", 1), ("model", 1), ("model", 2)]
        assert rows[1].digest == "d" * 64
        assert rows[1].record == b"rec"
        index.registry(lambda tx: tx.update_version("model", 2, "key-1", b"signed"))
        row = index.version_rows("model")[1]
        assert (row.created_by, row.record) == ("key-1", b"signed")
        assert sorted(index.published_digests()) == ["d" * 64, "e" * 64]

    def test_promotions_are_numbered_in_order(self, index: Index) -> None:
        def promote(tx: RegistryTransaction) -> tuple[int | None, int | None, int | None]:
            first = tx.insert_promotion(_promotion("model", 1))
            second = tx.insert_promotion(_promotion("model", 2))
            again = tx.insert_promotion(_promotion("model", 2, seq=first))
            tx.set_stage("model", "poc", 2)
            return first, second, again

        first, second, again = index.registry(promote)
        assert first is not None
        assert second is not None
        assert second > first
        assert again is None  # a given number that is taken is refused
        index.registry(lambda tx: tx.update_promotion(second, "key-1", b"sig"))
        rows = index.promotion_rows("model")
        assert [(r.seq, r.version) for r in rows] == [(first, 1), (second, 2)]
        assert (rows[1].by, rows[1].record) == ("key-1", b"sig")
        assert [(s.name, s.stage, s.version) for s in index.stage_rows()] == [("model", "poc", 2)]
        third = index.registry(lambda tx: tx.insert_promotion(_promotion("model", 1, seq=40)))
        assert third == 40
        assert index.registry(lambda tx: tx.insert_promotion(_promotion("model", 1))) == 41

    def test_a_failed_transaction_changes_nothing(self, index: Index) -> None:
        def fail(tx: RegistryTransaction) -> None:
            tx.insert_version(_version("model", 1))
            tx.insert_promotion(_promotion("model", 1))
            tx.set_stage("model", "poc", 1)
            raise StoreError("refused by a gate")

        with pytest.raises(StoreError, match="refused"):
            index.registry(fail)
        assert index.version_rows() == []
        assert index.promotion_rows() == []
        assert index.stage_rows() == []

    def test_racing_transactions_never_take_a_number_twice(self, index: Index) -> None:
        taken: list[int] = []
        lock = threading.Lock()

        def publish(tx: RegistryTransaction) -> int:
            number = max((r.version for r in tx.version_rows("model")), default=0) + 1
            assert tx.insert_version(_version("model", number))
            return number

        def worker() -> None:
            for _ in range(5):
                number = index.registry(publish)
                with lock:
                    taken.append(number)

        run: Callable[[], None] = worker
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken) == list(range(1, 21))
        assert [r.version for r in index.version_rows("model")] == list(range(1, 21))
