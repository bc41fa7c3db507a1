"""The fault and concurrency suites on S3 + PostgreSQL (real servers on 127.0.0.1).

What the local-folder suites (``tests/test_faults.py``) show for a folder and SQLite, here for a
team store: several processes on one store execute each call once, SIGKILL at random moments
never leaves anything corrupt and the next run resumes, a flipped byte is found and healed,
Dask workers write their outputs straight to the bucket, and a cached re-run makes a bounded
number of round trips whatever the number of steps.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("s3fs")

import mlflowkit as mk
from tests.resources import dag_basic, dag_faults

ROOT = Path(__file__).resolve().parents[2]
SPAWN = mp.get_context("spawn")


@pytest.fixture
def team(s3_bucket: str, postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """``(store url, index url)`` of a fresh team store; child processes get the index too."""
    index = postgres_server.url()
    monkeypatch.setenv(dag_faults.INDEX_ENV, index)
    return f"s3://{s3_bucket}/team", index


def user_calls(names: Any) -> set[str]:
    return {n for n in names if "." not in n and n != "square"}


@pytest.mark.timeout(240)
def test_concurrent_processes_on_a_team_store_execute_each_call_once(
    team: tuple[str, str], tmp_path: Path
) -> None:
    url, index = team
    counters = tmp_path / "counters"
    counters.mkdir()
    go = tmp_path / "go"
    env = {**os.environ, dag_faults.COUNTERS_ENV: str(counters), "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *sys.path])
    procs = []
    for machine in range(3):  # three "machines": each its own local cache folder
        env_m = {**env, "MLFLOWKIT_CACHE_DIR": str(tmp_path / f"machine-{machine}")}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.resources.dag_faults", url, str(go)],
                cwd=ROOT,
                env=env_m,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob("go.ready.*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=200)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert {r["status"] for r in results} == {"succeeded"}
    assert len({r["output"] for r in results}) == 1
    ran = dag_faults.executions(counters)
    calls = user_calls(results[0]["steps"])
    assert ran == dict.fromkeys(calls, 1)  # single flight across the three machines
    with mk.Store(url, index=index) as store:
        assert store.verify() == []
        assert {r.status for r in store.runs()} == {"succeeded"}


@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_on_a_team_store_never_corrupts(
    team: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, index = team
    rng = random.Random(20261204)
    forkserver = mp.get_context("forkserver")
    # the bucket's credentials as an argument: a fork server started by an earlier test
    # module keeps the environment it had then
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    kills = cycles = 0
    while kills < 3 and cycles < 20:  # a run may finish before its kill: go on until 3 kills
        cycles += 1
        proc = forkserver.Process(target=dag_faults.run_child, args=(url, 2.0, index, aws))
        proc.start()
        proc.join(rng.uniform(0.2, 2.5))
        if proc.exitcode is None:
            proc.kill()
            kills += 1
        proc.join()
        assert proc.exitcode in (0, -signal.SIGKILL)
        with mk.Store(url, index=index) as store:
            assert store.verify() == []  # nothing half-written is ever readable
            assert {r.status for r in store.runs()} <= {"interrupted", "succeeded"}
    assert kills >= 3
    counters = tmp_path / "counters"
    counters.mkdir()
    monkeypatch.setenv(dag_faults.COUNTERS_ENV, str(counters))
    store = mk.Store(url, index=index)
    run = dag_faults.faulty.plan().run(store=store, progress=False)
    assert run.status == "succeeded"
    executed = user_calls(s.name for s in run.steps if s.status == "executed")
    assert dag_faults.executions(counters) == dict.fromkeys(executed, 1)
    assert store.verify() == []


def test_a_flipped_byte_in_the_bucket_is_found_and_healed(
    team: tuple[str, str], s3_server: Any
) -> None:
    url, index = team
    store = mk.Store(url, index=index)
    run = dag_basic.chain.plan(n=3).run(store=store)
    digest = run.steps[1].output_digest
    assert digest is not None
    fs = s3_server.filesystem()
    place = store._find_packed(f"o:{digest}")  # a small value: a record of a segment file
    assert place is not None
    path = f"{url[len('s3://') :]}/segments/{place.segment[:2]}/{place.segment}.seg"
    data = bytearray(fs.cat_file(path))
    end = 8 + int.from_bytes(data[4:8], "little") + place.offset + place.length
    data[end - 1] ^= 0x01  # the last byte of its payload
    fs.pipe_file(path, bytes(data))
    assert mk.Store(url, index=index).verify() == [digest]  # found, and set aside
    again = dag_basic.chain.plan(n=3).run(store=mk.Store(url, index=index))
    assert again.output == 3
    # the damaged step runs again, makes the same value, and early cutoff keeps the next cached
    assert [s.status for s in again.steps] == ["cached", "executed", "cached"]
    assert mk.Store(url, index=index).verify() == []


@pytest.mark.dask
@pytest.mark.timeout(240)
def test_dask_workers_write_outputs_straight_to_the_bucket(
    team: tuple[str, str], s3_server: Any
) -> None:
    distributed = pytest.importorskip("distributed")
    url, index = team
    store = mk.Store(url, index=index)
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    executor = mk.executors.get("dask", address=cluster.scheduler_address)
    try:
        _dask_runs(url, index, store, executor, s3_server)
    finally:
        executor.shutdown()
        cluster.close()


def _dask_runs(url: str, index: str, store: Any, executor: Any, s3_server: Any) -> None:
    run = dag_basic.fan.plan(n=4).run(store=store, executor=executor)
    assert run.status == "succeeded"
    fs = s3_server.filesystem()
    root = url[len("s3://") :]
    executed = [s for s in run.steps if s.status == "executed" and not s.internal and s.key]
    assert executed
    for step in executed:  # each call's cache entry is in the bucket, written by a worker
        assert fs.exists(f"{root}/cache/{step.key[:2]}/{step.key}.json"), step.name
    again = dag_basic.fan.plan(n=4).run(store=mk.Store(url, index=index), executor=executor)
    assert {s.status for s in again.steps} == {"cached"}


def _requests(log: Path) -> int:
    """HTTP requests the S3 server logged so far (one line per request)."""
    return sum(' HTTP/1.1" ' in line for line in log.read_text(errors="replace").splitlines())


def test_a_cached_rerun_makes_a_bounded_number_of_round_trips(
    s3_bucket: str, postgres_server: Any, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pack read, not one request per step: the counts do not grow with the steps.

    S3 requests are counted in the server's own log; PostgreSQL round trips as the statements
    and transactions the index sends (each query, write or lock attempt is one).
    """
    from mlflowkit.store.postgres_index import PostgresIndex
    from tests.resources import dag_basic as dags

    sent = {"pg": 0}
    for name in ("query", "write", "check"):
        real = getattr(PostgresIndex, name)

        def counted(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            sent["pg"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(PostgresIndex, name, counted)
    log = s3_server.folder / "server.log"
    index = postgres_server.url()
    s3_counts, pg_counts = {}, {}
    for n in (20, 200):
        url = f"s3://{s3_bucket}/rerun-{n}"
        dags.chain.plan(n=n).run(store=mk.Store(url, index=index))
        before, sent["pg"] = _requests(log), 0
        again = dags.chain.plan(n=n).run(store=mk.Store(url, index=index))
        s3_counts[n], pg_counts[n] = _requests(log) - before, sent["pg"]
        assert {s.status for s in again.steps} == {"cached"}
    # bounded, and not growing with the steps (the first store of a session pays a few more)
    assert s3_counts[200] <= s3_counts[20] <= 30, s3_counts
    assert s3_counts[200] <= 15, s3_counts
    assert pg_counts[200] <= pg_counts[20] <= 10, pg_counts
