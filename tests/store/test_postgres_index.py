"""``PostgresIndex`` against a real PostgreSQL server on 127.0.0.1 (``tests/servers.py``).

What only a shared database can show: registry numbers taken by several processes at once,
locks that die with a ``kill -9``-ed holder, a schema written by a newer mlflowkit, a password
that never appears in a message, a server that is down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")

from mlflowkit.errors import StoreError
from mlflowkit.records import CacheEntry
from mlflowkit.store.index import ObjectRow, PackedRow, PromotionRow, VersionRow
from mlflowkit.store.postgres_index import (
    SCHEMA_VERSION,
    PostgresIndex,
    redact,
    schema_name,
)

ROOT = Path(__file__).resolve().parents[2]


def _store_url() -> str:
    return f"s3://bucket/{uuid.uuid4().hex}"


def _publish(index: PostgresIndex, name: str) -> int:
    def take(tx: Any) -> int:
        number = max((r.version for r in tx.version_rows(name)), default=0) + 1
        row = VersionRow(name, number, "d" * 64, None, "2026-12-04", None, "{}", b"sealed")
        assert tx.insert_version(row)
        return number

    result: int = index.registry(take)
    return result


def test_rows_round_trip_and_rebuild_keeps_the_registry(postgres_server: Any) -> None:
    index = PostgresIndex(postgres_server.url(), _store_url())
    assert not index.is_built()
    entry = CacheEntry(
        key="k" * 64,
        output_digest="a" * 64,
        step="s",
        stored=True,
        size=3,
        created_at=1.0,
        run_id="r1",
    )
    index.rebuild([ObjectRow("a" * 64, 3, "json", 1.0)], [(entry, 99)], [], clear=True)
    assert index.is_built()
    assert index.cache_keys_for("a" * 64) == ["k" * 64]
    assert index.digests_with_prefix("aaaa") == ["a" * 64]
    assert _publish(index, "model") == 1
    index.rebuild([], [], [], clear=True)  # the cache rows go, the registry's stay
    assert index.cache_keys_for("a" * 64) == []
    assert [r.version for r in index.version_rows("model")] == [1]
    assert index.published_digests() == ["d" * 64]


def test_two_stores_in_one_database_do_not_see_each_other(postgres_server: Any) -> None:
    first = PostgresIndex(postgres_server.url(), _store_url())
    second = PostgresIndex(postgres_server.url(), _store_url())
    assert first.schema != second.schema
    _publish(first, "m")
    assert second.version_rows() == []


def test_promotions_take_the_next_number_and_refuse_a_taken_one(postgres_server: Any) -> None:
    index = PostgresIndex(postgres_server.url(), _store_url())

    def promote(seq: int | None) -> int | None:
        row = PromotionRow(seq, "m", 1, None, "prototype", "now", None, "", "[]", None)
        result: int | None = index.registry(lambda tx: tx.insert_promotion(row))
        return result

    assert promote(None) == 1
    assert promote(5) == 5
    assert promote(5) is None
    assert promote(None) == 6
    assert [r.seq for r in index.promotion_rows("m")] == [1, 5, 6]


_PUBLISHER = """
import json, sys
from mlflowkit.store.postgres_index import PostgresIndex
from mlflowkit.store.index import VersionRow
index = PostgresIndex(sys.argv[1], sys.argv[2])
def take(tx):
    n = max((r.version for r in tx.version_rows("shared")), default=0) + 1
    assert tx.insert_version(VersionRow("shared", n, "d" * 64, None, "t", None, "{}", None))
    return n
print(json.dumps([index.registry(take) for _ in range(int(sys.argv[3]))]))
"""


def test_processes_publishing_at_once_get_distinct_numbers(postgres_server: Any) -> None:
    store = _store_url()
    PostgresIndex(postgres_server.url(), store).is_built()  # the schema, made once
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, postgres_server.url(), store, "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    taken: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        taken += json.loads(out)
    assert sorted(taken) == list(range(1, 61))


_HOLDER = """
import sys, time
from mlflowkit.store.postgres_index import PostgresIndex
index = PostgresIndex(sys.argv[1], sys.argv[2])
held = index.lock("the-key", 10)
print(held.__enter__(), flush=True)
time.sleep(120)
"""


def test_a_lock_is_exclusive_and_dies_with_its_killed_holder(postgres_server: Any) -> None:
    store = _store_url()
    index = PostgresIndex(postgres_server.url(), store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, postgres_server.url(), store],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "True"
        with index.lock("the-key", 0.2) as acquired:
            assert acquired is False
        with index.lock("another-key", 0.2) as acquired:
            assert acquired is True
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        start = time.monotonic()
        with index.lock("the-key", 10) as acquired:
            assert acquired is True
        assert time.monotonic() - start < 5  # no lease to wait out: the server let go
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_schema_from_a_newer_mlflowkit_is_refused_untouched(postgres_server: Any) -> None:
    import psycopg

    store = _store_url()
    PostgresIndex(postgres_server.url(), store).is_built()
    newer = str(SCHEMA_VERSION + 1)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(
            f"UPDATE \"{schema_name(store)}\".meta SET v = %s WHERE k = 'schema'", (newer,)
        )
    with pytest.raises(StoreError, match="newer mlflowkit") as info:
        PostgresIndex(postgres_server.url(), store).is_built()
    assert "pip install -U mlflowkit" in str(info.value)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        found = conn.execute(
            f"SELECT v FROM \"{schema_name(store)}\".meta WHERE k = 'schema'"
        ).fetchone()
    assert found == (newer,)


def test_a_dropped_schema_reads_as_replaced_and_is_made_again(postgres_server: Any) -> None:
    import psycopg

    store = _store_url()
    index = PostgresIndex(postgres_server.url(), store)
    _publish(index, "m")
    assert not index.replaced()
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema_name(store)}" CASCADE')
    assert index.replaced()
    fresh = PostgresIndex(postgres_server.url(), store)
    assert fresh.version_rows() == []
    assert _publish(fresh, "m") == 1


def test_wrong_password_is_a_store_error_that_never_shows_it(postgres_server: Any) -> None:
    url = postgres_server.url(password="hunter2-not-it")
    with pytest.raises(StoreError) as info:
        PostgresIndex(url, _store_url()).is_built()
    text = str(info.value)
    assert "hunter2-not-it" not in text
    assert "password authentication failed" in text
    assert redact(url) in text
    assert "PGPASSWORD" in text


def test_a_server_that_is_down_is_a_store_error_naming_what_to_check() -> None:
    from tests.servers import free_port

    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError) as info:
        PostgresIndex(url, _store_url()).is_built()
    text = str(info.value)
    assert "s3cret" not in text
    assert "is running and reachable" in text


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://ann:pw@db.example:5433/team") == (
        "postgresql://ann:***@db.example:5433/team"
    )
    assert redact("postgresql://ann@db/team") == "postgresql://ann@db/team"
    assert redact("postgresql:///team?host=/run/pg") == "postgresql:///team?host=/run/pg"


def _indexes(url: str, store: str) -> set[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema_name(store),)
        ).fetchall()
    return {r[0] for r in rows}


def test_a_schema_made_before_the_segment_index_gains_it_and_keeps_its_rows(
    postgres_server: Any,
) -> None:
    import psycopg

    url, store = postgres_server.url(), _store_url()
    index = PostgresIndex(url, store)
    index.add_batch([], [], [PackedRow(f"o:{i:064x}", f"seg{i % 3}", 0, 1, "c") for i in range(9)])
    assert "packed_segment" in _indexes(url, store)
    # what an mlflowkit of the same schema version made before the index existed
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP INDEX "{schema_name(store)}".packed_segment')
        conn.execute(f"DELETE FROM \"{schema_name(store)}\".meta WHERE k LIKE 'index:%'")
    again = PostgresIndex(url, store)
    assert again.packed_segments() == {"seg0", "seg1", "seg2"}  # the rows are kept
    assert "packed_segment" in _indexes(url, store)
    assert again.find_packed(f"o:{4:064x}") == PackedRow(f"o:{4:064x}", "seg1", 0, 1, "c")


def test_postgres_lists_segments_by_seeking_its_index_not_reading_every_row(
    postgres_server: Any,
) -> None:
    import psycopg

    from mlflowkit.store.index_rows import SEGMENTS_QUERY

    url, store = postgres_server.url(), _store_url()
    index = PostgresIndex(url, store)
    rows = [PackedRow(f"o:{i:064x}", f"seg{i % 20:02d}", i, 1, "c") for i in range(20_000)]
    index.add_batch([], [], rows)
    assert index.packed_segments() == {f"seg{i:02d}" for i in range(20)}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema_name(store)}"')
        conn.execute("ANALYZE packed")
        explained = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {SEGMENTS_QUERY}").fetchall()
    plan = "\n".join(r[0] for r in explained)
    # each next segment is one seek from the one before; DISTINCT reads all 20,000 rows
    assert "Index Cond: (segment > " in plan, plan
    assert "Seq Scan on packed" not in plan, plan


def test_a_schema_of_an_older_version_is_made_again_with_the_segment_index(
    postgres_server: Any,
) -> None:
    import psycopg

    url, store = postgres_server.url(), _store_url()
    PostgresIndex(url, store).add_batch([], [], [PackedRow("o:" + "a" * 64, "seg", 0, 1, "c")])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"UPDATE \"{schema_name(store)}\".meta SET v = %s WHERE k = 'schema'",
            (str(SCHEMA_VERSION - 1),),
        )
    again = PostgresIndex(url, store)
    assert again.packed_segments() == set()  # cache tables are made again, then rebuilt
    assert "packed_segment" in _indexes(url, store)
    with psycopg.connect(url, autocommit=True) as conn:
        notes = conn.execute(f'SELECT k FROM "{schema_name(store)}".meta').fetchall()
    assert ("index:packed_segment",) in notes
