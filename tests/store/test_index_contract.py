"""The index seam's contract, run on every implementation mlflowkit ships."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from mlflowkit.store.index import Index
from mlflowkit.store.sqlite_index import SqliteIndex
from mlflowkit.testing import IndexContract, InMemoryIndex


class TestSqliteIndex(IndexContract):
    def make_index(self, tmp_path: Path) -> Index:
        return SqliteIndex(str(tmp_path / "index.sqlite"))


class TestInMemoryIndex(IndexContract):
    def make_index(self, tmp_path: Path) -> Index:
        return InMemoryIndex()


class TestPostgresIndex(IndexContract):
    """The contract on a real PostgreSQL server (``tests/servers.py``), a schema per test."""

    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: Any) -> None:
        self.server = postgres_server

    def make_index(self, tmp_path: Path) -> Index:
        pytest.importorskip("psycopg")
        from mlflowkit.store.postgres_index import PostgresIndex

        return PostgresIndex(self.server.url(), f"s3://contract/{uuid.uuid4().hex}")


def test_sqlite_lists_segments_by_seeking_its_index_not_reading_every_row(tmp_path: Path) -> None:
    """A run that misses asks for the segments once per store: at a million records, a query
    reading every row would cost every such run ~0.3 s."""
    from mlflowkit.store.index_rows import SEGMENTS_QUERY

    index = SqliteIndex(str(tmp_path / "index.sqlite"))
    index.is_built()  # creates the tables
    plan = " | ".join(str(r[-1]) for r in index.query(f"EXPLAIN QUERY PLAN {SEGMENTS_QUERY}"))
    assert "SEARCH packed USING COVERING INDEX packed_segment" in plan, plan
    assert "SCAN packed" not in plan, plan  # a scan of the index reads every entry too
