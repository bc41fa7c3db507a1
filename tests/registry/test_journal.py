"""The registry's journal files: a lost index is filled back from them."""

from __future__ import annotations

import os
from pathlib import Path

import mlflowkit as mk
from mlflowkit.store.formats import unseal_document


def _history(store: mk.Store) -> list[tuple[int, str, str]]:
    return [(p.version, p.to_stage, p.reason) for p in store.history("vision/model")]


def _state(store: mk.Store) -> tuple[object, ...]:
    return (
        [(v.version, v.digest, v.metadata, v.stage) for v in store.versions("vision/model")],
        _history(store),
        {s: getattr(store.stage("vision/model", s), "version", None) for s in mk.STAGES},
    )


def _fill(store: mk.Store) -> None:
    for i in range(3):
        store.publish("vision/model", {"i": i}, metadata={"i": i})
    store.promote("vision/model@1", to="poc", reason="a")
    store.promote("vision/model@2", to="poc", reason="b")
    store.promote("vision/model@2", to="prototype", reason="c")


def test_every_record_has_its_file(tmp_path: Path) -> None:
    with mk.Store(str(tmp_path / "s")) as store:
        _fill(store)
    root = tmp_path / "s" / "registry"
    versions = sorted(p.name for p in (root / "versions" / "vision~model").iterdir())
    assert versions == ["1.json", "2.json", "3.json"]
    promotions = sorted((root / "promotions" / "vision~model").iterdir())
    assert len(promotions) == 3
    # each file is the version's record, sealed and signed by the publisher's key
    first, block, _ = unseal_document((root / "versions" / "vision~model" / "1.json").read_bytes())
    assert first["name"] == "vision/model" and first["version"] == 1
    assert block is not None and first["created_by"] == store.key_id


def test_a_deleted_index_is_filled_back(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with mk.Store(url) as store:
        _fill(store)
        before = _state(store)
    for suffix in ("", "-wal", "-shm"):
        path = tmp_path / "s" / f"index.sqlite{suffix}"
        if path.exists():
            os.remove(path)
    with mk.Store(url) as store:
        assert _state(store) == before
        # numbering goes on after the restored versions
        assert store.publish("vision/model", {"i": 9}).version == 4


def test_an_index_deleted_under_an_open_store(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    store = mk.Store(url)
    _fill(store)
    before = _state(store)
    os.remove(tmp_path / "s" / "index.sqlite")
    assert _state(store) == before
    store.close()
