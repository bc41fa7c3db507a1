"""Cache packs: the entries a pipeline's last run used, read in one go by the next run."""

from __future__ import annotations

import shutil
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import mlflowkit as mk
from mlflowkit.records import NO_META, CacheEntry
from mlflowkit.store import Store
from mlflowkit.store.formats import decode_pack, decode_pack_signed, encode_pack
from tests.holders import remove_held
from tests.resources import dag_runs


@pytest.fixture
def counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "counters"
    d.mkdir()
    monkeypatch.setattr(dag_runs, "COUNTER_DIR", d)
    return d


def _packs(store: Store) -> list[Path]:
    return sorted(Path(store.root, "packs").glob("*.json"))


def _executions(counters: Path) -> dict[str, int]:
    return {name: dag_runs.count(counters, name) for name in ("source", "parity", "downstream")}


def test_a_run_writes_its_pack_and_an_unchanged_rerun_leaves_it_alone(
    store: Store, counters: Path
) -> None:
    first = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    (pack,) = _packs(store)
    entries = store.read_pack(pack.stem)
    assert {s.key for s in first.steps} == set(entries)
    assert {entries[s.key].output_digest for s in first.steps} == {
        s.output_digest for s in first.steps
    }
    stamp = pack.stat().st_mtime_ns
    again = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    assert [s.status for s in again.steps] == ["cached"] * 3
    assert again.output == first.output
    assert pack.stat().st_mtime_ns == stamp  # nothing changed: not rewritten


def test_a_rerun_answers_hits_from_the_pack(store: Store, counters: Path) -> None:
    first = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    shutil.rmtree(Path(store.root, "cache"))  # only the pack knows the entries now
    again = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    assert [s.status for s in again.steps] == ["cached"] * 3
    assert again.output == first.output
    assert _executions(counters) == {"source": 1, "parity": 1, "downstream": 1}


def test_a_gone_intermediate_is_found_when_a_step_needs_it(store: Store, counters: Path) -> None:
    first = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    gone = first.step("source").output_digest
    assert gone is not None
    remove_held(store, gone)
    # nothing needs the value: the run stays fully cached and loads nothing
    again = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    assert [s.status for s in again.steps] == ["cached"] * 3
    assert again.output == first.output and not store.has(gone)
    # parity must execute and needs it: its producer executes again first
    forced = dag_runs.cutoff.plan(n=4).run(store=store, progress=False, force=["parity"])
    assert forced.step("source").status == "executed" and forced.step("parity").status == "executed"
    assert forced.step("source").output_digest == gone and store.has(gone)
    assert forced.output == first.output
    assert _executions(counters) == {"source": 2, "parity": 2, "downstream": 1}


def test_a_gone_output_is_computed_again(store: Store, counters: Path) -> None:
    first = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    out = first.step("downstream").output_digest
    assert out is not None
    remove_held(store, out)
    again = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    assert again.step("downstream").status == "executed"
    assert again.output == first.output and store.has(out)
    assert _executions(counters) == {"source": 1, "parity": 1, "downstream": 2}


def test_a_damaged_pack_is_removed_and_the_run_reads_the_entries(
    store: Store, counters: Path
) -> None:
    first = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    (pack,) = _packs(store)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    assert store.read_pack(pack.stem) == {}
    assert not pack.exists()
    again = dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    assert [s.status for s in again.steps] == ["cached"] * 3
    assert again.output == first.output
    assert _packs(store) == [pack]  # remade from the entries the run read


def test_a_changed_input_rewrites_the_pack_and_gc_drops_packs(store: Store, counters: Path) -> None:
    dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    (pack,) = _packs(store)
    before = set(store.read_pack(pack.stem))
    changed = dag_runs.cutoff.plan(n=5).run(store=store, progress=False)
    after = set(store.read_pack(pack.stem))
    assert after == {s.key for s in changed.steps} and after != before
    report = store.gc(keep_last=1)
    assert report.cache_deleted > 0
    assert _packs(store) == []
    assert store.du()["packs"]["count"] == 0


def test_a_forced_run_neither_reads_nor_trusts_the_pack(store: Store, counters: Path) -> None:
    dag_runs.cutoff.plan(n=4).run(store=store, progress=False)
    forced = dag_runs.cutoff.plan(n=4).run(store=store, progress=False, force=True)
    assert [s.status for s in forced.steps] == ["executed"] * 3
    assert _executions(counters) == {"source": 2, "parity": 2, "downstream": 2}


def test_pack_names_are_checked(store: Store) -> None:
    from mlflowkit.errors import StoreError

    with pytest.raises(StoreError, match="pack name"):
        store.read_pack("../escape")


_hex = st.text("0123456789abcdef", min_size=64, max_size=64)
_meta = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.booleans(), st.none()),
    max_size=3,
)
_entries = st.lists(
    st.builds(
        CacheEntry,
        key=_hex,
        output_digest=_hex,
        step=st.text(max_size=20),
        stored=st.booleans(),
        meta=_meta,
        created_at=st.floats(0, 2e9),
    ),
    max_size=8,
    unique_by=lambda e: e.key,
)


@settings(max_examples=150, deadline=None)
@given(_entries, st.data())
def test_pack_encoding_round_trips_and_any_flipped_byte_is_refused(
    entries: list[CacheEntry], data: st.DataObject
) -> None:
    raw = encode_pack(entries)
    # a pack keeps what a cache hit needs: key, output digest, whether stored, meta
    assert decode_pack(raw) == {
        e.key: CacheEntry(key=e.key, output_digest=e.output_digest, stored=e.stored, meta=e.meta)
        for e in entries
    }
    at = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(raw)
    flipped[at] ^= 1 << bit
    assert decode_pack(bytes(flipped)) is None


@settings(max_examples=150, deadline=None)
@given(_entries, st.data())
def test_a_signed_pack_round_trips_and_damage_never_passes_as_other_entries(
    entries: list[CacheEntry], data: st.DataObject
) -> None:
    def sign(digest: bytes) -> bytes:
        return digest * 3  # a 96-byte block, as a signature block is

    raw = encode_pack(entries, sign)
    found, block, digest = decode_pack_signed(raw)
    assert block is not None and block == sign(digest)
    assert found == decode_pack(encode_pack(entries))  # the same entries as unsigned
    assert found is not None
    # entries without meta share one empty dict (a pack of 100k entries keeps no 100k dicts)
    assert all(e.meta is NO_META for e in found.values() if not e.meta)
    at = data.draw(st.integers(0, len(raw) - 1))
    flipped = bytearray(raw)
    flipped[at] ^= 1 << data.draw(st.integers(0, 7))
    damaged, damaged_block, _ = decode_pack_signed(bytes(flipped))
    # never other entries under the same signature (a hex digit's case may flip harmlessly)
    assert damaged is None or damaged_block != block or damaged == found
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert decode_pack(raw[:cut]) is None


def test_an_entry_json_cannot_hold_is_refused_with_a_store_error() -> None:
    from mlflowkit.errors import StoreError
    from mlflowkit.store.formats import encode_entry

    entry = CacheEntry(key="a" * 64, output_digest="b" * 64, meta={"n": 2**70})
    with pytest.raises(StoreError, match="not JSON-able"):
        encode_entry(entry)
    with pytest.raises(StoreError, match="not JSON-able"):
        encode_pack([entry])


def test_a_gone_list_whose_items_a_step_needs_is_computed_again(store: Store) -> None:
    from tests.resources import dag_basic

    first = dag_basic.train.plan(n=30).run(store=store, progress=False)
    made = first.step("make_data").output_digest
    assert made is not None
    remove_held(store, made)
    # fit needs X and y, items of make_data's (gone) tuple: make_data executes again
    again = dag_basic.train.plan(n=30).run(store=store, progress=False, force=["fit"])
    assert again.step("make_data").status == "executed" and store.has(made)
    assert again.step("fit").status == "executed"
    assert again.output == first.output


@mk.step
def _double(x: int) -> int:
    return 2 * x


@mk.step
def _shift(x: int) -> int:
    return x + 1


@mk.pipeline
def _fan_of_fan(n: int) -> list[int]:
    return _shift.map(x=_double.map(x=list(range(n))))


def test_a_pack_keeps_no_item_digests_of_a_gather_and_a_rerun_still_fans_out_from_it(
    store: Store,
) -> None:
    first = _fan_of_fan.plan(n=5).run(store=store, progress=False)
    (pack,) = _packs(store)
    entries = store.read_pack(pack.stem)
    gathers = [entries[s.key] for s in first.steps if s.step.endswith("_op_gather@gather")]
    assert len(gathers) == 2
    assert all(e.meta == {"len": 5} for e in gathers)  # items: the digests of its inputs
    shutil.rmtree(Path(store.root, "cache"))  # only the pack knows the entries now
    again = _fan_of_fan.plan(n=5).run(store=store, progress=False)
    assert again.output == first.output == [2 * i + 1 for i in range(5)]
    assert {s.name: (s.status, s.output_digest) for s in again.steps} == {
        s.name: ("cached", s.output_digest) for s in first.steps
    }
