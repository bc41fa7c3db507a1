"""Concurrent writers (threads and spawned processes) and single-flight locks.

A local store locks with kernel record locks on ``locks/flight`` (``mlflowkit.store.flight``);
other stores (``memory://``, S3) with lock files (``mlflowkit.store.locks.hold``), whose own
behaviour (holder record, lease, heartbeat, stale and junk files) is tested here on a local
folder through ``hold`` directly.
"""

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
from store_helpers import (
    fake_digest,
    fork_after_taking_a_lock,
    hold_file_lock_forever,
    hold_lock_forever,
    kill,
    take_lock_briefly,
    try_lock,
    write_many,
)

from mlflowkit.hashing import hash_value
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store
from mlflowkit.store.filesystems import LocalFiles
from mlflowkit.store.flight import FLIGHT_FILE
from mlflowkit.store.locks import hold

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


# single-flight locks of a store (local: record locks; memory://: lock files) ------------------


def _flight(store: Store) -> Path:
    return Path(store.root, "locks", FLIGHT_FILE)


def test_lock_is_exclusive_and_times_out(local_store: Store) -> None:
    with local_store.lock("k1", timeout=1) as first:
        assert first
        started = time.monotonic()
        with local_store.lock("k1", timeout=0.3) as second:
            assert second is False
        assert 0.25 <= time.monotonic() - started < 5
        started = time.monotonic()
        with local_store.lock("k1", timeout=0) as once:
            assert once is False
        assert time.monotonic() - started < 0.1  # timeout 0 tries once: no wait of 0.3 s
        with local_store.lock("k2", timeout=0) as other:
            assert other  # other keys are independent
    with local_store.lock("k1", timeout=0) as again:
        assert again
    # one empty file for every key: nothing is created or removed per lock
    assert os.listdir(Path(local_store.root, "locks")) == [FLIGHT_FILE]
    assert _flight(local_store).stat().st_size == 0


def test_odd_lock_keys_are_locks_too(local_store: Store, memory_store: Store) -> None:
    for store in (local_store, memory_store):
        with store.lock("../weird key/with slashes", timeout=1) as got:
            assert got
            with store.lock("../weird key/with slashes", timeout=0) as second:
                assert second is False
            with store.lock("../weird key/with slashes!", timeout=0) as other:
                assert other
    # a lock FILE gets a safe name
    with memory_store.lock("../weird key/with slashes", timeout=1) as got:
        assert got
        (name,) = [f.name for f in memory_store._io.listdir(f"{memory_store.root}/locks")]
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


def test_two_store_objects_on_one_folder_exclude_each_other(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    Store(url).create()
    (tmp_path / "link").symlink_to(tmp_path / "s")  # one folder, two spellings
    with Store(url) as a, Store(str(tmp_path / "link")) as b:
        with a.lock("k", timeout=1) as first:
            assert first
            with b.lock("k", timeout=0.2) as second:
                assert second is False  # one process: the record lock alone would let it in
            # b takes and releases another key, and is closed: a's lock must survive both
            # (closing a descriptor of the file would drop every lock of this process on it)
            with b.lock("other", timeout=0) as other:
                assert other
            b.close()
            out = SPAWN.Queue()
            proc = SPAWN.Process(target=try_lock, args=(url, "k", out))
            proc.start()
            assert out.get(timeout=60) is False  # still held, as another process sees it
            proc.join(timeout=30)
        with b.lock("k", timeout=0) as now:
            assert now


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
def test_lock_of_a_sigkilled_holder_is_free_at_once(tmp_path: Path) -> None:
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
                assert got is False  # alive: held, by another process
            kill(pid)
            proc.join(timeout=30)
            # the kernel dropped the dead holder's lock: free on the first try, no lease
            with store.lock("step-key", timeout=0) as got:
                assert got
    finally:
        if proc.is_alive():
            kill(proc.pid)  # type: ignore[arg-type]
            proc.join()


@pytest.mark.timeout(120)
def test_a_forked_child_keeps_no_lock_state_of_its_parent(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    Store(url).close()
    out = SPAWN.Queue()
    proc = SPAWN.Process(target=fork_after_taking_a_lock, args=(url, out))
    proc.start()
    during, after, other = out.get(timeout=60)
    proc.join(timeout=30)
    assert during is False  # the parent held "k": the child is another process
    assert after is True  # released by the parent: the child's own turn on "k" is free
    assert other is True


def test_the_lock_file_outlives_gc_and_sweeps(local_store: Store) -> None:
    with local_store.lock("k", timeout=1) as got:
        assert got
    inode = _flight(local_store).stat().st_ino
    with local_store.lock("k", timeout=1) as got:
        assert got
        local_store.sweep_tmp(max_age=0)
        local_store.gc(keep_last=0)
    local_store.sweep_tmp(max_age=0)
    local_store.gc(keep_last=0, older_than=0)
    assert local_store.verify() == []
    assert _flight(local_store).stat().st_ino == inode
    assert os.listdir(Path(local_store.root, "locks")) == [FLIGHT_FILE]


def test_a_removed_locks_folder_is_made_again(local_store: Store) -> None:
    with local_store.lock("k", timeout=1) as got:
        assert got
    _flight(local_store).unlink()
    Path(local_store.root, "locks").rmdir()
    with local_store.lock("k", timeout=1) as got:
        assert got
        assert _flight(local_store).exists()


def test_locks_on_memory_filesystem(memory_store: Store) -> None:
    with memory_store.lock("k", timeout=1) as first:
        assert first
        with memory_store.lock("k", timeout=0.1) as second:
            assert second is False
        with memory_store.lock("k2", timeout=0) as other:
            assert other
    with memory_store.lock("k", timeout=0) as again:
        assert again
    assert memory_store._io.listdir(f"{memory_store.root}/locks") == []


# lock files (``hold``), as stores other than local folders use them ---------------------------


@pytest.fixture
def files(tmp_path: Path) -> LocalFiles:
    """The objects seam of a local folder, for ``hold`` on real files."""
    (tmp_path / "locks").mkdir()
    return LocalFiles(str(tmp_path))


def _lock_path(files: LocalFiles, key: str = "k") -> str:
    return f"{files.root}/locks/{key}.lock"


def _write_lock(files: LocalFiles, key: str, **fields: object) -> Path:
    holder = {
        "token": "t" * 32,
        "pid": 1,
        "host": "another-machine",
        "acquired_at": time.time(),
        "expires_at": time.time() + 60,
    }
    holder.update(fields)
    path = Path(_lock_path(files, key))
    path.write_text(json.dumps(holder))
    return path


def test_lock_file_is_exclusive_and_removed_on_release(files: LocalFiles) -> None:
    with hold(files, _lock_path(files), timeout=1) as first:
        assert first
        started = time.monotonic()
        with hold(files, _lock_path(files), timeout=0.3) as second:
            assert second is False
        assert 0.25 <= time.monotonic() - started < 5
        with hold(files, _lock_path(files, "k2"), timeout=0) as other:
            assert other
    with hold(files, _lock_path(files), timeout=0) as again:
        assert again
    assert os.listdir(Path(files.root, "locks")) == []


def test_lock_file_says_who_holds_it(files: LocalFiles) -> None:
    with hold(files, _lock_path(files), timeout=1) as got:
        assert got
        info = json.loads(Path(_lock_path(files)).read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert info["expires_at"] > time.time()


@pytest.mark.timeout(120)
def test_lock_file_of_a_sigkilled_holder_is_taken_over(files: LocalFiles) -> None:
    ready = SPAWN.Queue()
    proc = SPAWN.Process(target=hold_file_lock_forever, args=(files.root, "step-key", ready))
    proc.start()
    try:
        pid, acquired = ready.get(timeout=60)
        assert acquired
        path = _lock_path(files, "step-key")
        with hold(files, path, timeout=0.2) as got:
            assert got is False  # alive: held
        kill(pid)
        proc.join(timeout=30)
        started = time.monotonic()
        with hold(files, path, timeout=10) as got:
            assert got
        # taken over because the pid is dead, well before the 60 s lease ran out
        assert time.monotonic() - started < 5
    finally:
        if proc.is_alive():
            kill(proc.pid)  # type: ignore[arg-type]
            proc.join()


def test_lock_file_of_another_host_waits_for_its_lease(files: LocalFiles) -> None:
    _write_lock(files, "k")  # live lease on another machine: cannot judge its pid
    with hold(files, _lock_path(files), timeout=0.2) as got:
        assert got is False
    _write_lock(files, "k", expires_at=time.time() - 1)  # lease ran out
    with hold(files, _lock_path(files), timeout=1) as got:
        assert got


def test_heartbeat_keeps_a_short_lease_alive(files: LocalFiles) -> None:
    with hold(files, _lock_path(files), timeout=1, lease=0.3) as got:
        assert got
        path = Path(_lock_path(files))
        first = json.loads(path.read_text())["expires_at"]
        time.sleep(0.5)  # longer than the lease: only the heartbeat keeps it valid
        assert json.loads(path.read_text())["expires_at"] > first
        other = LocalFiles(files.root)  # another store object's seam
        with hold(other, _lock_path(files), timeout=0.2, lease=0.3) as theirs:
            assert theirs is False


def test_junk_lock_file_is_broken_once_older_than_the_lease(files: LocalFiles) -> None:
    path = Path(_lock_path(files))
    path.write_text("")  # a holder crashed between creating and writing its lock file
    with hold(files, str(path), timeout=0.1, lease=1.0) as got:
        assert got is False
    old = time.time() - 5
    os.utime(path, (old, old))
    with hold(files, str(path), timeout=1, lease=1.0) as got:
        assert got


def test_lock_file_release_does_not_remove_a_successor(files: LocalFiles) -> None:
    with hold(files, _lock_path(files), timeout=1) as got:
        assert got
        # someone judged us stale and took over (simulated by rewriting the file)
        _write_lock(files, "k", host=socket.gethostname(), pid=os.getpid())
    # our release saw a foreign token and left the successor's file in place
    assert Path(_lock_path(files)).exists()
