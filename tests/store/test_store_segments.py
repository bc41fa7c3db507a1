"""Group commit: a run's small objects and cache entries go to segment files.

What a user relies on: far fewer files per run, the same answers (values, cache hits, lineage,
verify, gc, du) as with a file per value, and no wrong answer after a crash, a damaged byte or
a lost file — at worst the calls run again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

import mlflowkit as mk
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store
from mlflowkit.store.formats import (
    SEGMENT_ENTRY,
    SEGMENT_OBJECT,
    decode_segment_toc,
    encode_segment,
    segment_toc_size,
)
from mlflowkit.store.segments import COMMIT_DELAY_S, SMALL_BYTES
from tests.holders import flip_last_byte, held_records, place_of, remove_held


@mk.step
def inc(x: int) -> int:
    return x + 1


@mk.step
def big(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@mk.step
def slow_inc(x: int) -> int:
    time.sleep(3 * COMMIT_DELAY_S)
    return x + 1


@mk.pipeline
def chain(n: int, start: int = 0) -> int:
    x = start
    for _ in range(n):
        x = inc(x)
    return x


@mk.pipeline
def with_big(n: int) -> np.ndarray:
    return big(n)


def files(root: str, area: str) -> list[Path]:
    return sorted(p for p in Path(root, area).rglob("*") if p.is_file())


def test_a_run_writes_its_small_values_and_entries_in_few_segment_files(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    run = chain.plan(n=300).run(store=url)
    assert run.output == 300
    assert files(url, "objects") == [] and files(url, "cache") == []
    segments = files(url, "segments")
    assert 1 <= len(segments) <= 20  # 300 values and 300 entries, a handful of files
    held = held_records(mk.Store(url))
    assert len(held["objects"]) == 300 and len(held["cache"]) == 300
    # a fresh store object (another process would do the same) finds every value and entry
    store = mk.Store(url)
    again = chain.plan(n=300).run(store=store)
    assert {s.status for s in again.steps} == {"cached"}
    assert mk.Run(store.run(run.id), store).output == 300
    assert {store.get(s.output_digest) for s in run.steps if s.output_digest} == set(range(1, 301))
    assert store.verify() == []


def test_values_bigger_than_a_page_keep_a_file_of_their_own(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    n = SMALL_BYTES // 8 + 1  # just over the limit once serialized
    run = with_big.plan(n=n).run(store=url)
    digest = run.steps[0].output_digest
    assert digest is not None
    assert Path(url, "objects", digest[:2], digest).is_file()
    np.testing.assert_array_equal(mk.Store(url).get(digest), np.arange(n, dtype=np.float64))


def test_a_slow_step_is_kept_at_once_and_a_fast_batch_within_the_window(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    store = mk.Store(url)
    with store.batched():
        store.put_cache(CacheEntry(key="a" * 64, output_digest="b" * 64, stored=False))
        other = mk.Store(url)
        assert other.get_cache("a" * 64) is None  # still in this process's batch
        deadline = time.monotonic() + 100 * COMMIT_DELAY_S
        while other.get_cache("a" * 64) is None and time.monotonic() < deadline:
            time.sleep(COMMIT_DELAY_S / 4)
        assert other.get_cache("a" * 64) is not None  # written within the window
        time.sleep(2 * COMMIT_DELAY_S)  # a record that comes slowly is written at once
        store.put_cache(CacheEntry(key="c" * 64, output_digest="d" * 64, stored=False))
        assert mk.Store(url).get_cache("c" * 64) is not None


def test_a_lost_segment_record_runs_its_call_again(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    first = chain.plan(n=5).run(store=url)
    store = mk.Store(url)
    lost = first.steps[-1].output_digest  # the run's output: the next run must load it
    assert lost is not None
    remove_held(store, lost)
    assert not store.has(lost)
    with pytest.raises(mk.MissingObjectError):
        store.get(lost)
    again = chain.plan(n=5).run(store=mk.Store(url))
    assert again.output == 5
    assert [s.status for s in again.steps] == ["cached"] * 4 + ["executed"]
    assert mk.Store(url).get(lost) == 5


def test_a_flipped_byte_in_a_segment_record_is_found_set_aside_and_healed(
    tmp_path: Path,
) -> None:
    url = str(tmp_path / "s")
    first = chain.plan(n=5).run(store=url)
    digest = first.steps[1].output_digest
    assert digest is not None
    store = mk.Store(url)
    flip_last_byte(store, digest)
    with pytest.raises(mk.CorruptObjectError):
        store.get(digest)
    assert not store.has(digest)
    assert list(Path(url, "quarantine").iterdir())  # its bytes were set aside
    assert mk.Store(url).verify() == []  # out of its segment: nothing damaged is left
    again = chain.plan(n=5).run(store=mk.Store(url))
    assert [s.status for s in again.steps] == ["cached", "executed", "cached", "cached", "cached"]
    assert mk.Store(url).get(digest) == 2


def test_an_object_in_a_segment_is_read_without_decoding_the_table_of_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "s")
    first = chain.plan(n=200).run(store=url)
    assert first.steps[-1].output_digest is not None
    digest = first.steps[-1].output_digest

    def refuse(data: bytes) -> None:
        raise AssertionError("the whole table of contents was decoded to read one object")

    monkeypatch.setattr("mlflowkit.store.segments.decode_segment", refuse)
    assert Store(url).get(digest) == 200  # its record alone, checked by its BLAKE3 and header


def test_an_index_row_pointing_at_another_objects_record_reads_as_corrupt(
    tmp_path: Path,
) -> None:
    import sqlite3

    url = str(tmp_path / "s")
    first = chain.plan(n=3).run(store=url)
    one, two = (first.steps[i].output_digest for i in (0, 1))
    db = sqlite3.connect(Path(url, "index.sqlite"))
    with db:  # the row of ``one`` now names ``two``'s record, whose own BLAKE3 matches
        (segment, off, length, checksum) = db.execute(
            "SELECT segment, off, len, checksum FROM packed WHERE name = ?", (f"o:{two}",)
        ).fetchone()
        db.execute(
            "UPDATE packed SET segment = ?, off = ?, len = ?, checksum = ? WHERE name = ?",
            (segment, off, length, checksum, f"o:{one}"),
        )
    db.close()
    with pytest.raises(mk.CorruptObjectError, match="another object"):
        Store(url).get(one)


def test_verify_finds_a_flipped_byte_in_a_segment_record(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    first = chain.plan(n=4).run(store=url)
    digest = first.steps[3].output_digest
    assert digest is not None
    flip_last_byte(mk.Store(url), digest)
    assert mk.Store(url).verify() == [digest]
    assert mk.Store(url).verify() == []
    assert chain.plan(n=4).run(store=url).steps[3].status == "executed"


def test_a_damaged_table_of_contents_sets_the_segment_aside(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    chain.plan(n=3).run(store=url)
    (segment,) = files(url, "segments")
    data = bytearray(segment.read_bytes())
    data[12] ^= 0x01  # inside the TOC's checksum
    segment.write_bytes(bytes(data))
    found = mk.Store(url).verify()
    assert any(line.startswith("damaged segment") for line in found)
    assert files(url, "segments") == []
    assert mk.Store(url).verify() == []
    again = chain.plan(n=3).run(store=url)
    assert [s.status for s in again.steps] == ["executed"] * 3
    assert again.output == 3


def test_write_batch_waits_for_a_write_another_thread_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's last write must not return while the background flusher, which took the
    batch first, is still writing it: the run record would come before its values."""
    import threading

    from mlflowkit.store.filesystems import LocalFiles

    began = threading.Event()
    plain = LocalFiles.write_atomic

    def slow(self: LocalFiles, path: str, *args: object, **kwargs: object) -> None:
        if path.endswith(".seg") and threading.current_thread().name == "first":
            began.set()
            time.sleep(0.5)
        plain(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalFiles, "write_atomic", slow)
    url = str(tmp_path / "s")
    store = Store(url)
    with store.batched():
        digest = store.put(12345)
        first = threading.Thread(target=store.write_batch, name="first")
        first.start()
        assert began.wait(10)
        store.write_batch()  # the batch is empty here: the first thread took it
        assert files(url, "segments"), "returned before the other thread's write was done"
        assert Store(url).get(digest) == 12345  # another store object finds it
        first.join(10)


def test_a_segment_whose_rows_were_never_written_is_read_into_the_index(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    chain.plan(n=4).run(store=url)
    # as if the writer died, or lost its database, between the file and the rows
    for suffix in ("", "-wal", "-shm"):
        Path(url, "index.sqlite" + suffix).unlink(missing_ok=True)
    again = chain.plan(n=4).run(store=mk.Store(url))
    assert [s.status for s in again.steps] == ["cached"] * 4


def test_a_segment_missing_under_its_rows_reads_as_missing(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    chain.plan(n=3).run(store=url)
    for segment in files(url, "segments"):  # as if a crash lost the file, not its rows
        segment.unlink()
    again = chain.plan(n=3).run(store=mk.Store(url))
    assert [s.status for s in again.steps] == ["executed"] * 3
    assert mk.Store(url).verify() == []


def test_gc_rewrites_a_segment_without_its_dead_records(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    old = chain.plan(n=3, start=100).run(store=url)
    new = chain.plan(n=3, start=0).run(store=url)
    store = mk.Store(url)
    report = store.gc(keep_last=1)
    assert (report.objects_deleted, report.cache_deleted) == (3, 3)
    assert report.bytes_freed > 0
    for step in old.steps:
        assert step.output_digest is not None and not store.has(step.output_digest)
    for step in new.steps:
        assert step.output_digest is not None and store.has(step.output_digest)
    held = held_records(store)
    assert len(held["objects"]) == 3 and len(held["cache"]) == 3
    again = chain.plan(n=3, start=0).run(store=mk.Store(url))
    assert {s.status for s in again.steps} == {"cached"}
    assert mk.Store(url).verify() == []
    usage = mk.Store(url).du()
    assert usage["objects"]["count"] == 3 and usage["cache"]["count"] == 3


def test_reindex_finds_what_segments_hold(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    chain.plan(n=7).run(store=url)
    counts = mk.Store(url).reindex()
    assert counts["objects"] == 7 and counts["cache"] == 7


def test_a_store_that_is_not_local_nor_shared_writes_a_file_per_value() -> None:
    url = f"memory://mk-seg-{os.getpid()}-{time.time_ns()}"
    store = Store(url)
    try:
        chain.plan(n=3).run(store=store)
        fs = store._io.fs  # type: ignore[union-attr]
        assert not fs.exists(f"{store.root}/segments")
        assert len(fs.find(f"{store.root}/cache")) == 3
    finally:
        store._io.fs.rm(store.root, recursive=True)  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([SEGMENT_OBJECT, SEGMENT_ENTRY]),
            st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
            st.binary(max_size=300),
        ),
        max_size=20,
    )
)
def test_a_segment_lists_every_record_where_it_is(records: list[tuple[str, str, bytes]]) -> None:
    data = encode_segment(records)
    size = segment_toc_size(data[:8])
    assert size is not None
    toc, block, _ = decode_segment_toc(data[:size])
    assert block is None and toc is not None
    assert [(k, n) for k, n, *_ in toc] == [(k, n) for k, n, _ in records]
    for (_, _, offset, length, _), (_, _, blob) in zip(toc, records, strict=True):
        assert data[size + offset : size + offset + length] == blob


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0))
def test_a_damaged_table_of_contents_never_decodes(blob: bytes, where: int) -> None:
    data = bytearray(encode_segment([(SEGMENT_OBJECT, "ab", blob)]))
    size = segment_toc_size(bytes(data[:8]))
    assert size is not None
    i = 8 + where % (size - 8)
    data[i] ^= 0x01
    toc, _, _ = decode_segment_toc(bytes(data[:size]))
    assert toc is None


def test_place_of_finds_a_record_inside_its_segment(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    run = chain.plan(n=2).run(store=url)
    digest = run.steps[0].output_digest
    assert digest is not None
    path, start, length = place_of(mk.Store(url), "o", digest)
    assert path.suffix == ".seg" and length > 0
    assert path.read_bytes()[start : start + length].startswith(b"MKOB")


def test_a_scalar_kept_in_a_batch_beside_a_file_of_its_own_reads_and_goes_alike(
    tmp_path: Path,
) -> None:
    url = str(tmp_path / "s")
    store = mk.Store(url)
    digest = store.put(12345)  # outside a batch: a file of its own
    assert Path(url, "objects", digest[:2], digest).is_file()
    looked: list[str] = []
    exists = store._io.exists

    def counted(path: str) -> bool:
        looked.append(path)
        return exists(path)

    store._io.exists = counted  # type: ignore[method-assign]
    with store.batched():  # a scalar goes to the segment without a look for that file
        assert store.put(12345, digest) == digest
        assert store.put(2.5) and store.put(None) and store.put(True)
        assert looked == []
        text = store.put("a string is looked for")
        assert [Path(p).name for p in looked] == [text]
    assert len(held_records(mk.Store(url))["objects"]) == 5  # 12345 kept twice: harmless
    reader = mk.Store(url)
    assert reader.get(digest) == 12345 and reader.verify() == []
    report = reader.gc(keep_last=0)  # nothing references it: both copies go
    assert report.objects_deleted >= 1
    assert not reader.has(digest) and not mk.Store(url).has(digest)
    assert mk.Store(url).verify() == []


def test_a_cached_re_run_asks_the_index_about_its_values_only_as_much_as_it_checks(
    tmp_path: Path,
) -> None:
    """A re-run whose pack lists 30 stored values checks only its output: one lookup, no
    query for the whole pack; a caller that checks them all gets them in one more query."""
    url = str(tmp_path / "s")
    chain.plan(n=30).run(store=url)
    store = Store(url)
    asked: list[int] = []
    idx = store._idx(flush=False)
    one, many = idx.find_packed, idx.find_packed_many
    idx.find_packed = lambda name: asked.append(1) or one(name)  # type: ignore[method-assign]
    idx.find_packed_many = lambda names: asked.append(len(names)) or many(names)  # type: ignore
    run = chain.plan(n=30).run(store=store)
    assert run.output == 30 and all(s.status == "cached" for s in run.steps)
    assert max(asked) == 1, asked  # the output, one by one
    store = Store(url)  # a new reader checks every value of the pack
    pack = store.read_pack(_pack_names(url)[0])
    digests = [e.output_digest for e in pack.values() if e.stored]
    assert len(digests) == 30
    idx = store._idx(flush=False)
    one, many = idx.find_packed, idx.find_packed_many
    idx.find_packed = lambda name: asked.append(1) or one(name)  # type: ignore[method-assign]
    idx.find_packed_many = lambda names: asked.append(len(names)) or many(names)  # type: ignore
    asked.clear()
    assert all(store.has(d) for d in digests)
    assert asked == [1, 30], asked


def _pack_names(url: str) -> list[str]:
    return [f[:-5] for f in os.listdir(os.path.join(url, "packs")) if f.endswith(".json")]
