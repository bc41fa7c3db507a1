"""The store as the layers above it see it: its seams, and the registry on any index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mlflowkit as mk
from mlflowkit.errors import RegistryError
from mlflowkit.registry import db, journal
from mlflowkit.store import choice
from mlflowkit.store.index import Index
from mlflowkit.store.objects import ObjectStore
from mlflowkit.store.seams import HasSeams, StoreSeams
from mlflowkit.testing import InMemoryIndex


def test_a_store_exposes_its_seams(tmp_path: Path) -> None:
    with mk.Store(str(tmp_path / "s")) as store:
        assert isinstance(store, HasSeams)
        seams = store.seams
        assert isinstance(seams, StoreSeams)
        assert isinstance(seams.objects, ObjectStore)
        assert seams.objects.root == store.root
        assert seams.url == store.url
        assert seams.durable is True
        digest = store.put(np.arange(3))
        assert isinstance(seams.index(), Index)
        assert seams.index().digests_with_prefix(digest[:12]) == [digest]  # buffered rows written
        assert seams.objects.exists(f"{store.root}/objects/{digest[:2]}/{digest}")


class _NoSeams:
    """A store that keeps no index (another implementation of the store contract)."""

    url = "elsewhere://x"


def test_the_registry_refuses_a_store_without_seams() -> None:
    with pytest.raises(RegistryError, match="keeps no index"):
        db.index_of(_NoSeams())
    assert journal.read_all(_NoSeams(), "versions") == []


def test_the_registry_works_on_any_index_implementation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions, stages and verify on a store whose index is the in-memory double: no SQL."""
    made: list[InMemoryIndex] = []

    def open_index(url: str, local_root: str | None, protocol: str) -> InMemoryIndex:
        made.append(InMemoryIndex())
        return made[-1]

    monkeypatch.setattr(choice, "open_for_store", open_index)
    with mk.Store(str(tmp_path / "s")) as store:
        v1 = store.publish("model", np.arange(3))
        v2 = store.publish("model", np.arange(4))
        assert store.publish("model", np.arange(4)).version == 2  # same content: no new version
        store.promote("model@1", to="poc")
        store.promote("model@2", to="poc")
        assert [v.version for v in store.versions("model")] == [1, 2]
        assert store.stage("model", "poc") == store.artifact("model@2")
        assert [p.version for p in store.history("model")] == [1, 2]
        assert store.verify() == []
        assert (v1.version, v2.version) == (1, 2)
        np.testing.assert_array_equal(store.artifact("model@poc").load(), np.arange(4))
    assert len(made) == 1
    assert [r.version for r in made[0].version_rows("model")] == [1, 2]
    # a new, empty index is filled back from the store's journal files
    with mk.Store(str(tmp_path / "s")) as again:
        assert [v.version for v in again.versions("model")] == [1, 2]
        assert again.stage("model", "poc") == again.artifact("model@2")
    assert len(made) == 2
