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


def test_sqlite_keeps_no_object_row_for_an_object_a_segment_holds(tmp_path: Path) -> None:
    """A segment-held object's ``packed`` row says the store holds it: a second row for it
    would be one more insert at a random spot of a B-tree per small value, the cost of a
    commit once the index outgrows memory. Prefix lookups and removal still see it."""
    from mlflowkit.store.index import ObjectRow, PackedRow

    index = SqliteIndex(str(tmp_path / "index.sqlite"))
    held, filed = "ab" + "1" * 62, "ab" + "2" * 62
    index.add_batch(
        [ObjectRow(held, 10, "json", 1.0), ObjectRow(filed, 9000, "npy", 1.0)],
        [],
        [PackedRow(f"o:{held}", "seg", 0, 10, "c")],
    )
    assert [r[0] for r in index.query("SELECT digest FROM objects")] == [filed]
    assert index.digests_with_prefix("ab") == sorted([held, filed])
    assert index.digests_with_prefix("ab1") == [held]
    assert index.digests_with_prefix("ab3") == []
    index.remove_objects([held])
    assert index.digests_with_prefix("ab") == [filed]
    assert index.find_packed(f"o:{held}") is None


def test_a_local_index_of_the_previous_schema_is_made_again_from_the_files(
    tmp_path: Path,
) -> None:
    """Schema 3 kept an ``objects`` row for every segment-held object; an index of that
    version is dropped and rebuilt (it is a cache of the files), and finds every value."""
    import sqlite3

    import mlflowkit as mk

    url = str(tmp_path / "s")
    with mk.Store(url) as store:
        digests = [store.put(i) for i in range(5)]
    conn = sqlite3.connect(str(tmp_path / "s" / "index.sqlite"))
    conn.execute("UPDATE meta SET v='3' WHERE k='schema'")
    conn.execute("INSERT INTO objects VALUES ('ff' || hex(randomblob(31)), 1, 'json', 1.0)")
    conn.commit()
    conn.close()
    with mk.Store(url) as store:
        assert [store.get(d) for d in digests] == list(range(5))
        rows = store._idx().query("SELECT v FROM meta WHERE k='schema'")  # type: ignore[attr-defined]
        assert rows == [("4",)]
        assert store._idx().digests_with_prefix("ff") == []  # type: ignore[attr-defined]
