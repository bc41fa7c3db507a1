"""Fixtures for the store tests: real local folders and real ``memory://`` filesystems."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflowkit.store import Store


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in a temporary folder (fsync on, as by default), laid out."""
    with Store(str(tmp_path / "store")) as store:
        store.create()
        yield store


@pytest.fixture
def memory_store() -> Iterator[Store]:
    """A fresh store on fsspec's in-memory filesystem, removed afterwards."""
    url = f"memory://mk-test-{uuid.uuid4().hex}"
    with Store(url) as store:
        store.create()
        yield store
    fs = store._io.fs  # type: ignore[union-attr]
    if fs.exists(store.root):
        fs.rm(store.root, recursive=True)


@pytest.fixture(params=["local", "memory"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """Each test using this runs on a local folder and on ``memory://``."""
    name = "local_store" if request.param == "local" else "memory_store"
    store: Store = request.getfixturevalue(name)
    return store
