"""Helpers shared by the store tests, importable by spawned worker processes too."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import blake3


def fake_digest(label: str) -> str:
    """A 64-hex digest standing in for a content digest in tests that pass ``digest=``."""
    return blake3.blake3(label.encode()).hexdigest()


def write_many(url: str, worker: int, count: int) -> int:
    """Worker process: write objects, cache entries and runs into one shared store."""
    from mlflowkit.records import CacheEntry, RunRecord, StepRun
    from mlflowkit.store import Store

    with Store(url) as store:
        for i in range(count):
            store.put(i)  # every worker writes these: idempotent
            own = store.put([worker, i])  # stored under its content digest: verify() agrees
            key = fake_digest(f"key-w{worker}-{i}")
            store.put_cache(CacheEntry(key=key, output_digest=own, step="m:f"))
            assert store.get_cache(key) is not None
            step = StepRun(name="f", key=key, status="executed", output_digest=own)
            record = RunRecord(
                id=f"w{worker}-{i:03d}", pipeline="p", started_at=time.time(), steps=[step]
            )
            store.put_run(record)
            if i % 10 == 0:
                store.runs()
                store.du()
    return count


def hold_lock_forever(url: str, key: str, ready: Any) -> None:
    """Worker process: take the lock, say so, then wait to be killed."""
    from mlflowkit.store import Store

    store = Store(url)
    with store.lock(key, timeout=10) as acquired:
        ready.put((os.getpid(), acquired))
        while True:
            time.sleep(0.1)


def take_lock_briefly(url: str, key: str, hold_s: float, out: Any) -> None:
    """Worker process: take the lock, note the interval it was held, release it."""
    from mlflowkit.store import Store

    with Store(url) as store, store.lock(key, timeout=60) as acquired:
        start = time.time()
        time.sleep(hold_s)
        out.put((acquired, start, time.time()))


def kill(pid: int) -> None:
    """SIGKILL a process (no cleanup handlers run)."""
    os.kill(pid, signal.SIGKILL)


def hold_file_lock_forever(root: str, key: str, ready: Any) -> None:
    """Worker process: take a lock FILE (``hold``) under ``root``, say so, wait to be killed."""
    from mlflowkit.store.filesystems import LocalFiles
    from mlflowkit.store.locks import hold

    with hold(LocalFiles(root), f"{root}/locks/{key}.lock", timeout=10) as acquired:
        ready.put((os.getpid(), acquired))
        while True:
            time.sleep(0.1)


def try_lock(url: str, key: str, out: Any) -> None:
    """Worker process: try the store's lock on ``key`` once; put whether it was free."""
    from mlflowkit.store import Store

    with Store(url) as store, store.lock(key, timeout=0) as acquired:
        out.put(acquired)


def fork_after_taking_a_lock(url: str, out: Any) -> None:
    """Worker process (single-threaded, so it may fork): take ``k``, fork, release ``k``.

    The forked child must not reuse this process's lock state: once the parent released
    ``k`` the child takes it, and a key the parent never held is free to it at once. Puts
    ``(child could take "k" while the parent held it, child took "k" after, child took "other")``.
    """
    from mlflowkit.store import Store

    store = Store(url)
    tried_r, tried_w = os.pipe()
    released_r, released_w = os.pipe()
    result_r, result_w = os.pipe()
    with store.lock("k", timeout=1) as held:
        assert held
        pid = os.fork()
        if pid == 0:  # the child: a process of its own, holding none of the parent's locks
            with store.lock("k", timeout=0) as during:
                pass
            os.write(tried_w, b"x")
            os.read(released_r, 1)
            with store.lock("k", timeout=10) as after, store.lock("other", timeout=0) as other:
                pass
            os.write(result_w, bytes([during, after, other]))
            os._exit(0)
        os.read(tried_r, 1)  # the child's first try happened while we held "k"
    os.write(released_w, b"x")
    flags = os.read(result_r, 3)
    os.waitpid(pid, 0)
    out.put(tuple(bool(b) for b in flags))
