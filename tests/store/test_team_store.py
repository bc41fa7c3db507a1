"""Team stores: objects on S3, the index in PostgreSQL, both real servers on 127.0.0.1.

``mk.Store("s3://bucket/prefix", index="postgresql://…")``: runs, caching, version numbers
shared by every machine, and clear errors (never showing the password) for bad input.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("s3fs")

import mlflowkit as mk
from tests.resources import dag_basic

ROOT = Path(__file__).resolve().parents[2]
SPAWN = mp.get_context("spawn")


def _child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env["MLFLOWKIT_CACHE_DIR"] = str(Path(env["MLFLOWKIT_CACHE_DIR"]) / "another-machine")
    return env


def test_a_run_on_s3_and_postgres_is_fully_cached_on_another_machine(
    s3_bucket: str, postgres_server: Any
) -> None:
    url, index = f"s3://{s3_bucket}/team", postgres_server.url()
    store = mk.Store(url, index=index)
    run = dag_basic.chain.plan(n=6).run(store=store)
    assert (run.status, run.output) == ("succeeded", 6)
    script = (
        "import json, sys, mlflowkit as mk\n"
        "from tests.resources import dag_basic\n"
        "store = mk.Store(sys.argv[1], index=sys.argv[2])\n"
        "run = dag_basic.chain.plan(n=6).run(store=store)\n"
        "ids = [r.id for r in store.runs()]\n"
        "print(json.dumps([run.output, [s.status for s in run.steps], ids]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, url, index],
        capture_output=True,
        text=True,
        env=_child_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    output, statuses, run_ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert output == 6
    assert statuses == ["cached"] * 6
    assert run.id in run_ids  # the other machine sees this machine's run in the shared index
    assert store.verify() == []


@pytest.mark.timeout(300)
def test_machines_publishing_at_once_share_one_numbering(
    s3_bucket: str, postgres_server: Any
) -> None:
    url, index = f"s3://{s3_bucket}/registry", postgres_server.url()
    machines, count = 3, 6
    with ProcessPoolExecutor(max_workers=machines, mp_context=SPAWN) as pool:
        got = list(
            pool.map(
                _publish, [url] * machines, [index] * machines, range(machines), [count] * machines
            )
        )
    numbers = sorted(n for per in got for n in per)
    assert numbers == list(range(1, machines * count + 1))  # none lost, none given twice
    with mk.Store(url, index=index) as store:
        versions = store.versions("team/model")
        assert [v.version for v in versions] == numbers
        assert sorted((v.load()["machine"], v.load()["i"]) for v in versions) == [
            (m, i) for m in range(machines) for i in range(count)
        ]


def _publish(url: str, index: str, machine: int, count: int) -> list[int]:
    from team_helpers import publish_as_machine

    return publish_as_machine(url, index, machine, count)


def test_an_index_that_is_not_postgresql_is_refused_without_its_credentials() -> None:
    with pytest.raises(mk.StoreError, match="must be a PostgreSQL URL") as info:
        mk.Store("memory://x", index="mysql://ann:secret@db/team")
    assert "secret" not in str(info.value)


def test_wrong_credentials_fail_clearly_and_the_run_resumes_with_the_right_ones(
    s3_bucket: str, postgres_server: Any
) -> None:
    url = f"s3://{s3_bucket}/creds"
    bad = postgres_server.url(password="not-the-password")
    with pytest.raises(mk.StoreError) as info:
        dag_basic.chain.plan(n=3).run(store=mk.Store(url, index=bad))
    text = str(info.value)
    assert "not-the-password" not in text
    assert "password authentication failed" in text and "PGPASSWORD" in text
    run = dag_basic.chain.plan(n=3).run(store=mk.Store(url, index=postgres_server.url()))
    assert (run.status, run.output) == ("succeeded", 3)


def test_a_database_that_is_down_fails_clearly_and_the_run_resumes_once_it_is_back(
    s3_bucket: str,
) -> None:
    from tests.servers import start_postgres

    url = f"s3://{s3_bucket}/outage"
    with start_postgres() as server:
        first = dag_basic.chain.plan(n=4).run(store=mk.Store(url, index=server.url()))
        assert first.status == "succeeded"
        server.pause()
        with pytest.raises(mk.StoreError) as info:
            dag_basic.chain.plan(n=6).run(store=mk.Store(url, index=server.url()))
        assert server.password not in str(info.value)
        assert "is running and reachable" in str(info.value)
        server.resume()
        again = dag_basic.chain.plan(n=6).run(store=mk.Store(url, index=server.url()))
        assert again.status == "succeeded"
        assert [s.status for s in again.steps] == ["cached"] * 4 + ["executed"] * 2


def test_a_bucket_that_does_not_exist_is_a_clear_error(s3_server: Any, s3_bucket: str) -> None:
    with pytest.raises(mk.StoreError, match="mlflowkit never creates buckets") as info:
        dag_basic.chain.plan(n=2).run(store=mk.Store("s3://no-such-bucket-here/p"))
    assert "'no-such-bucket-here' does not exist" in str(info.value)
    assert "no-such-bucket-here" not in s3_server.filesystem().ls("")


def _python_block(page: str, first_line: str) -> str:
    text = (ROOT / page).read_text(encoding="utf-8")
    for block in text.split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        if first_line in code:
            return code
    raise AssertionError(f"no python block with {first_line!r} in {page}")


def test_the_team_setup_guide_works_as_written(
    s3_bucket: str, postgres_server: Any, tmp_path: Path
) -> None:
    code = _python_block("docs/guides/team.md", "mk.Store(")
    # the guide's own URLs, pointed at the test servers; the password goes in PGPASSWORD
    code = code.replace("s3://ml-team/churn", f"s3://{s3_bucket}/churn")
    code = code.replace(
        "postgresql://ml@db.internal:5432/mlflowkit",
        f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/postgres",
    )
    script = tmp_path / "guide.py"
    script.write_text(code, encoding="utf-8")
    env = {**_child_env(), "PGPASSWORD": postgres_server.password}
    for _ in range(2):  # the second time, everything is cached
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "succeeded 4950"
    url = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/postgres"
    os.environ["PGPASSWORD"] = postgres_server.password
    try:
        runs = mk.Store(f"s3://{s3_bucket}/churn", index=url).runs()
    finally:
        del os.environ["PGPASSWORD"]
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert all(s.status == "cached" for s in runs[0].steps)


def test_migrate_moves_a_local_store_to_s3_and_postgres_fully_cached(
    s3_bucket: str, postgres_server: Any, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from mlflowkit.cli import main

    local = mk.Store(str(tmp_path / "laptop"))
    first = dag_basic.chain.plan(n=5).run(store=local)
    local.publish("team/churn-model", {"weights": [1, 2, 3]})
    local.promote("team/churn-model@1", to="poc", reason="first try")
    target, index = f"s3://{s3_bucket}/moved", postgres_server.url()

    result = CliRunner().invoke(
        main, ["store", "migrate", str(tmp_path / "laptop"), target, "--index", index]
    )
    assert result.exit_code == 0, result.output
    assert "copied" in result.output and postgres_server.password not in result.output

    moved = mk.Store(target, index=index)
    again = dag_basic.chain.plan(n=5).run(store=moved)
    assert [s.status for s in again.steps] == ["cached"] * 5  # nothing re-ran
    assert first.id in [r.id for r in moved.runs()]
    version = moved.artifact("team/churn-model@poc")
    assert (version.version, version.load()) == (1, {"weights": [1, 2, 3]})
    assert moved.verify() == []

    rerun = CliRunner().invoke(
        main, ["store", "migrate", str(tmp_path / "laptop"), target, "--index", index]
    )
    assert rerun.exit_code == 0, rerun.output
    assert "copied 0 file(s)" in rerun.output  # resumable: what is there is skipped


def test_a_database_that_goes_away_mid_run_stops_it_and_the_run_resumes(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.resources import dag_outage
    from tests.servers import start_postgres

    url = f"s3://{s3_bucket}/mid-run"
    with start_postgres() as server:
        monkeypatch.setenv(dag_outage.STOP_ENV, f"{server.proc.pid}:{server.port}")
        with pytest.raises(mk.MlflowkitError) as info:
            dag_outage.chain_with_outage.plan(n=6).run(store=mk.Store(url, index=server.url()))
        text = str(info.value)
        assert server.password not in text
        assert "cannot use the PostgreSQL index" in text
        monkeypatch.delenv(dag_outage.STOP_ENV)
        server.resume()
        store = mk.Store(url, index=server.url())
        again = dag_outage.chain_with_outage.plan(n=6).run(store=store)
        assert (again.status, again.output) == ("succeeded", 6)
        statuses = [s.status for s in again.steps]
        assert statuses[:3] == ["cached"] * 3  # what finished before the outage is kept
        assert store.verify() == []


def test_s3_credentials_that_are_refused_are_a_clear_error(tmp_path: Path) -> None:
    from tests.servers import start_s3

    with start_s3(authenticated=True) as s3:
        s3.filesystem().mkdir("guarded")
        env = {**_child_env(), **s3.env()}
        script = (
            "import sys, mlflowkit as mk\n"
            "from tests.resources import dag_basic\n"
            "run = dag_basic.chain.plan(n=2).run(store=mk.Store('s3://guarded/p'))\n"
            "print(run.status)\n"
        )

        def attempt(secret: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                env={**env, "AWS_SECRET_ACCESS_KEY": secret},
                cwd=ROOT,
                timeout=120,
                check=False,
            )

        good = attempt(s3.secret)
        assert good.returncode == 0 and good.stdout.strip() == "succeeded", good.stderr
        bad = attempt("not-the-secret")
        assert bad.returncode != 0
        assert "StoreError" in bad.stderr
        assert "was refused" in bad.stderr and "AWS_SECRET_ACCESS_KEY" in bad.stderr
        assert "not-the-secret" not in bad.stderr
