"""Concurrent writers (threads and spawned processes) and single-flight locks."""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from store_helpers import fake_digest, hold_lock_forever, kill, take_lock_briefly, write_many

from mlflowkit.hashing import hash_value
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store

SPAWN = mp.get_context("spawn")


@pytest.mark.timeout(300)
def test_concurrent_processes_write_one_store_without_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    workers, count = 4, 25
    with ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN) as pool:
        done = list(pool.map(write_many, [url] * workers, range(workers), [count] * workers))
    assert done == [count] * workers
    with Store(url) as store:
        assert len(store.runs()) == workers * count
        du = store.du()
        assert du["objects"]["count"] == count + workers * count
        assert du["cache"]["count"] == workers * count
        assert store.verify() == []
        assert store.reindex() == {
            "objects": count + workers * count,
            "cache": workers * count,
            "runs": workers * count,
        }
        assert store.get(hash_value([3, 7])) == [3, 7]


def test_concurrent_threads_share_one_store(local_store: Store) -> None:
    def work(i: int) -> None:
        d = local_store.put({"i": i}, fake_digest(f"t{i}"))
        local_store.put_cache(CacheEntry(key=fake_digest(f"k{i}"), output_digest=d))
        assert local_store.get_cache(fake_digest(f"k{i}")) is not None
        assert local_store.get(d) == {"i": i}
        local_store.runs()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(64)))
    assert local_store.du()["objects"]["count"] == 64


# locks -----------------------------------------------------------------------------------------


def test_lock_is_exclusive_and_times_out(local_store: Store) -> None:
    with local_store.lock("k1", timeout=1) as first:
        assert first
        started = time.monotonic()
        with local_store.lock("k1", timeout=0.3) as second:
            assert second is False
        assert 0.25 <= time.monotonic() - started < 5
        with local_store.lock("k2", timeout=0) as other:
            assert other  # other keys are independent
    with local_store.lock("k1", timeout=0) as again:
        assert again
    assert os.listdir(Path(local_store.root, "locks")) == []


def test_lock_file_says_who_holds_it(local_store: Store) -> None:
    with local_store.lock("k", timeout=1):
        info = json.loads(Path(local_store.root, "locks", "k.lock").read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert info["expires_at"] > time.time()


def test_odd_lock_keys_are_hashed_to_safe_names(local_store: Store) -> None:
    with local_store.lock("../weird key/with slashes", timeout=1) as got:
        assert got
        (name,) = os.listdir(Path(local_store.root, "locks"))
        assert "/" not in name and name.endswith(".lock")


def test_threads_take_turns(local_store: Store) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def work() -> None:
        with local_store.lock("shared", timeout=30) as got:
            assert got
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.01)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


@pytest.mark.timeout(120)
def test_processes_take_turns(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    Store(url).close()
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=take_lock_briefly, args=(url, "k", 0.2, out)) for _ in range(3)]
    for p in procs:
        p.start()
    spans = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(acquired for acquired, _, _ in spans)
    spans.sort(key=lambda s: s[1])
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert start >= end - 0.01


@pytest.mark.timeout(120)
def test_lock_of_a_sigkilled_holder_is_taken_over(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    Store(url).close()
    ready = SPAWN.Queue()
    proc = SPAWN.Process(target=hold_lock_forever, args=(url, "step-key", ready))
    proc.start()
    try:
        pid, acquired = ready.get(timeout=60)
        assert acquired
        with Store(url) as store:
            with store.lock("step-key", timeout=0.2) as got:
                assert got is False  # alive: held
            kill(pid)
            proc.join(timeout=30)
            started = time.monotonic()
            with store.lock("step-key", timeout=10) as got:
                assert got
            # taken over because the pid is dead, well before the 60 s lease ran out
            assert time.monotonic() - started < 5
    finally:
        if proc.is_alive():
            kill(proc.pid)  # type: ignore[arg-type]
            proc.join()


def _write_lock(store: Store, key: str, **fields: object) -> Path:
    holder = {
        "token": "t" * 32,
        "pid": 1,
        "host": "another-machine",
        "acquired_at": time.time(),
        "expires_at": time.time() + 60,
    }
    holder.update(fields)
    path = Path(store.root, "locks", f"{key}.lock")
    path.write_text(json.dumps(holder))
    return path


def test_lock_of_another_host_waits_for_its_lease(local_store: Store) -> None:
    _write_lock(local_store, "k")  # live lease on another machine: cannot judge its pid
    with local_store.lock("k", timeout=0.2) as got:
        assert got is False
    _write_lock(local_store, "k", expires_at=time.time() - 1)  # lease ran out
    with local_store.lock("k", timeout=1) as got:
        assert got


def test_heartbeat_keeps_a_short_lease_alive(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s"), lock_lease=0.3) as store, store.lock("k", timeout=1) as got:
        assert got
        path = Path(store.root, "locks", "k.lock")
        first = json.loads(path.read_text())["expires_at"]
        time.sleep(0.5)  # longer than the lease: only the heartbeat keeps it valid
        assert json.loads(path.read_text())["expires_at"] > first
        with Store(store.url, lock_lease=0.3) as other, other.lock("k", timeout=0.2) as theirs:
            assert theirs is False


def test_junk_lock_file_is_broken_once_older_than_the_lease(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s"), lock_lease=1.0) as store:
        store.create()
        path = Path(store.root, "locks", "k.lock")
        path.write_text("")  # a holder crashed between creating and writing its lock file
        with store.lock("k", timeout=0.1) as got:
            assert got is False
        old = time.time() - 5
        os.utime(path, (old, old))
        with store.lock("k", timeout=1) as got:
            assert got


def test_locks_on_memory_filesystem(memory_store: Store) -> None:
    with memory_store.lock("k", timeout=1) as first:
        assert first
        with memory_store.lock("k", timeout=0.1) as second:
            assert second is False
    with memory_store.lock("k", timeout=0) as again:
        assert again


def test_lock_release_does_not_remove_a_successor(local_store: Store) -> None:
    with local_store.lock("k", timeout=1) as got:
        assert got
        # someone judged us stale and took over (simulated by rewriting the file)
        _write_lock(local_store, "k", host=socket.gethostname(), pid=os.getpid())
    # our release saw a foreign token and left the successor's file in place
    assert Path(local_store.root, "locks", "k.lock").exists()
