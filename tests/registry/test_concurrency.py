"""Concurrent publishers (real processes) and a publisher killed mid-publish."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from registry_helpers import promote_many, publish_many

import mlflowkit as mk

SPAWN = mp.get_context("spawn")


@pytest.mark.timeout(300)
def test_concurrent_processes_never_lose_or_reuse_a_version(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    workers, count = 4, 15
    with ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN) as pool:
        got = list(pool.map(publish_many, [url] * workers, range(workers), [count] * workers))
    numbers = sorted(n for per_worker in got for n in per_worker)
    assert numbers == list(range(1, workers * count + 1))  # none lost, none given twice
    for per_worker in got:
        assert per_worker == sorted(per_worker)
    with mk.Store(url) as store:
        versions = store.versions("shared/model")
        assert [v.version for v in versions] == list(range(1, workers * count + 1))
        assert len({v.digest for v in versions}) == workers * count
        values = [v.load() for v in versions]
        assert sorted((x["worker"], x["i"]) for x in values) == [
            (w, i) for w in range(workers) for i in range(count)
        ]


@pytest.mark.timeout(300)
def test_concurrent_promotions_keep_one_holder_and_every_record(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with mk.Store(url) as store:
        for i in range(3):
            store.publish("race", i)
    with ProcessPoolExecutor(max_workers=3, mp_context=SPAWN) as pool:
        list(pool.map(promote_many, [url] * 3, [1, 2, 3], [10] * 3))
    with mk.Store(url) as store:
        history = store.history("race")
        holder = store.stage("race", "poc")
        assert holder is not None and holder.version == history[-1].version
        # a repeat promotion of the holder changes nothing; every move is recorded once
        moves = [p.version for p in history]
        assert all(a != b for a, b in itertools.pairwise(moves))
        assert sorted({p.reason for p in history}) == sorted(p.reason for p in history)
        assert [v.stage for v in store.versions("race")].count("poc") == 1


def test_concurrent_threads_publishing_equal_content_make_one_version(store: mk.Store) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: store.publish("same", [1, 2, 3]).version, range(32)))
    assert set(got) == {1}
    assert len(store.versions("same")) == 1


@pytest.mark.timeout(120)
def test_kill_mid_publish_leaves_a_whole_state(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    helper = Path(__file__).with_name("registry_helpers.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(helper), url], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(0.3)
        proc.kill()  # SIGKILL: no cleanup, possibly inside a transaction
        proc.wait()
        proc.stdout.close()
        with mk.Store(url) as store:
            versions = store.versions("crash")
            assert [v.version for v in versions] == list(range(1, len(versions) + 1))
            for v in versions:
                assert store.has(v.digest)
            history = store.history("crash")
            poc = store.stage("crash", "poc")
            assert history and poc is not None
            assert poc.version == history[-1].version
            assert all(p.to_stage == "poc" for p in history)
            # the next publisher continues the numbering
            assert store.publish("crash", {"after": len(versions)}).version == len(versions) + 1
