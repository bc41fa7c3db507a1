"""The team-store test servers are real, and today's store already works on the S3 one.

The servers (``tests/servers.py``) are a PostgreSQL server and an S3-protocol server started on
127.0.0.1 by the tests themselves. These tests pin what the rest of the team-store suite relies
on: password authentication over TCP, S3 exclusive creates (``If-None-Match``), and a pipeline
run on an ``s3://`` store that a second process finds fully cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlflowkit as mk
from tests.resources import dag_basic

ROOT = Path(__file__).resolve().parents[2]


def test_postgres_listens_on_loopback_with_password_authentication(postgres_server: Any) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_server.url(), connect_timeout=10) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.url(password="not-the-password"), connect_timeout=10)


def test_postgres_databases_are_separate(postgres_server: Any) -> None:
    psycopg = pytest.importorskip("psycopg")
    url = postgres_server.create_database("mk_separate")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (41)")
        assert conn.execute("SELECT x + 1 FROM t").fetchone() == (42,)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()
        assert found == (0,)


def test_s3_server_refuses_a_second_exclusive_create(s3_server: Any, s3_bucket: str) -> None:
    fs = s3_server.filesystem()
    fs.pipe_file(f"{s3_bucket}/once", b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{s3_bucket}/once", b"second", mode="create")
    assert fs.cat_file(f"{s3_bucket}/once") == b"first"


def test_a_run_on_s3_is_fully_cached_for_another_process(s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/project"
    run = dag_basic.chain.plan(n=5).run(store=mk.Store(url), progress=False)
    assert run.status == "succeeded"
    assert run.output == 5

    again = dag_basic.chain.plan(n=5).run(store=mk.Store(url), progress=False)
    assert [s.status for s in again.steps] == ["cached"] * 5

    # Another process, another local index folder: it sees only what is in the bucket.
    script = (
        "import json, mlflowkit as mk\n"
        "from tests.resources import dag_basic\n"
        f"run = dag_basic.chain.plan(n=5).run(store=mk.Store({url!r}), progress=False)\n"
        "print(json.dumps([run.output, [s.status for s in run.steps]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env["MLFLOWKIT_CACHE_DIR"] = str(Path(env["MLFLOWKIT_CACHE_DIR"]) / "other-process")
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    output, statuses = json.loads(out.stdout.strip().splitlines()[-1])
    assert output == 5
    assert statuses == ["cached"] * 5
    assert mk.Store(url).verify() == []
