"""Named artifacts outside pipelines: names, versions, lookups, persistence."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import mlflowkit as mk


@pytest.mark.parametrize(
    "name", ["digits", "digits-model", "a.b_c-d", "vision/digits-model", "a/b/c", "x" * 128]
)
def test_valid_names(store: mk.Store, name: str) -> None:
    v = store.publish(name, [1, 2, 3])
    assert v.name == name and v.version == 1


@pytest.mark.parametrize(
    "name", ["", "Digits", "has space", "-lead", "a//b", "/a", "a/", "x" * 129, "ü", "a@b", 3]
)
def test_invalid_names_raise_registry_error(store: mk.Store, name: object) -> None:
    with pytest.raises(mk.RegistryError) as info:
        store.publish(name, 1)  # type: ignore[arg-type]
    assert "name" in str(info.value)
    assert store.artifacts() == []


def test_versions_are_numbered_and_equal_content_makes_none(store: mk.Store) -> None:
    a = store.publish("feats", np.arange(3), metadata={"source": "test"})
    again = store.publish("feats", np.arange(3))
    b = store.publish("feats", np.arange(4))
    c = store.publish("feats", np.arange(3))  # equal to an older version, not the latest
    assert [a.version, again.version, b.version, c.version] == [1, 1, 2, 3]
    assert again == a
    assert a.digest == mk.hash_value(np.arange(3)) == c.digest
    assert a.metadata == {"source": "test"} and a.metrics == {} and a.created_by == store.key_id
    assert a.run_id is None and a.stage is None
    when = datetime.datetime.fromisoformat(a.created_at)
    assert when.utcoffset() == datetime.timedelta(0)
    assert [v.version for v in store.versions("feats")] == [1, 2, 3]
    assert store.artifacts() == ["feats"]
    np.testing.assert_array_equal(store.artifact("feats@2").load(), np.arange(4))
    assert store.artifact("feats") == c
    assert store.versions("nothing") == []


def test_lookups_list_what_exists(store: mk.Store) -> None:
    store.publish("model", 1)
    store.publish("model", 2)
    with pytest.raises(mk.RegistryError, match=r"no version 7: its versions are 1-2"):
        store.artifact("model@7")
    with pytest.raises(mk.RegistryError, match=r"no artifact named 'modle'.*has: model"):
        store.artifact("modle")
    with pytest.raises(mk.RegistryError, match=r"holds stage 'mvp'.*no version holds any"):
        store.artifact("model@mvp")
    with pytest.raises(mk.RegistryError, match=r"version number or a stage"):
        store.artifact("model@latest")
    with pytest.raises(mk.RegistryError, match=r"numbered from 1"):
        store.artifact("model@0")


def test_metadata_must_be_json(store: mk.Store) -> None:
    with pytest.raises(mk.RegistryError, match="JSON"):
        store.publish("m", 1, metadata={"x": object()})


def test_versions_survive_reopening_and_reindex(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with mk.Store(url) as store:
        store.publish("m", "one")
        store.publish("m", "two")
    with mk.Store(url) as store:
        assert store.reindex()["objects"] == 2
        assert [v.load() for v in store.versions("m")] == ["one", "two"]


def test_registry_tables_survive_an_index_schema_change(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with mk.Store(url) as store:
        store.publish("m", "one")
    conn = sqlite3.connect(str(tmp_path / "s" / "index.sqlite"))
    conn.execute("UPDATE meta SET v='0' WHERE k='schema'")
    conn.commit()
    conn.close()
    with mk.Store(url) as store:
        assert store.runs() == []  # the index was rebuilt for its new schema
        assert store.artifact("m").load() == "one"


def test_gc_keeps_every_version(store: mk.Store) -> None:
    old = store.publish("kept", np.arange(5))
    loose = store.put(np.arange(6))  # not a version: collected
    store.gc(keep_last=0)
    assert store.has(old.digest) and not store.has(loose)
    np.testing.assert_array_equal(store.artifact("kept@1").load(), np.arange(5))
