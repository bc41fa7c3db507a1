"""The index seam's contract, run on every implementation mlflowkit ships."""

from __future__ import annotations

from pathlib import Path

from mlflowkit.store.index import Index
from mlflowkit.store.sqlite_index import SqliteIndex
from mlflowkit.testing import IndexContract, InMemoryIndex


class TestSqliteIndex(IndexContract):
    def make_index(self, tmp_path: Path) -> Index:
        return SqliteIndex(str(tmp_path / "index.sqlite"))


class TestInMemoryIndex(IndexContract):
    def make_index(self, tmp_path: Path) -> Index:
        return InMemoryIndex()
