"""Kernel record locks of local stores (``mlflowkit.store.flight``) and where they are chosen.

Their behaviour through a store (processes, threads, SIGKILL, fork, two store objects) is in
``test_store_concurrency.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import blake3

from mlflowkit.store.choice import index_opener
from mlflowkit.store.flight import FLIGHT_FILE, LocalLocks, offset_of


def test_a_cache_key_is_its_own_offset_and_other_names_are_hashed() -> None:
    key = blake3.blake3(b"a cache key").hexdigest()
    assert offset_of(key) == int(key[:15], 16)
    other = blake3.blake3(b"step-key").hexdigest()
    assert offset_of("step-key") == int(other[:15], 16)
    assert offset_of("k1") != offset_of("k2")
    assert all(0 <= offset_of(n) < 2**60 for n in (key, "k1", "f" * 64))


def test_local_locks_wait_and_time_out(tmp_path: Path) -> None:
    locks = LocalLocks(str(tmp_path), "file://" + str(tmp_path))
    locks.check()
    with locks.lock("k", 1) as first:
        assert first
        assert (tmp_path / "locks" / FLIGHT_FILE).exists()  # made on first use
        started = time.monotonic()
        with locks.lock("k", 0.3) as second:
            assert second is False
        assert 0.25 <= time.monotonic() - started < 5
    locks.close()  # nothing to close; the locks work on
    with locks.lock("k", 0) as again:
        assert again


def test_a_waiting_thread_gets_the_lock_once_it_is_released(tmp_path: Path) -> None:
    locks = LocalLocks(str(tmp_path), str(tmp_path))
    got: list[tuple[bool, float]] = []

    def wait() -> None:
        with locks.lock("k", 10) as acquired:
            got.append((acquired, time.monotonic()))

    with locks.lock("k", 1):
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)
        released = time.monotonic()
    waiter.join()
    ((acquired, at),) = got
    assert acquired and at >= released


def test_the_store_choice_of_locks(tmp_path: Path) -> None:
    _, local = index_opener(None, str(tmp_path), str(tmp_path), "file")
    assert isinstance(local, LocalLocks)  # a local store with the SQLite index
    _, remote = index_opener(None, "memory://s", None, "memory")
    assert remote is None  # a remote store locks with files
