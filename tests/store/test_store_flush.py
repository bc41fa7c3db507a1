"""Background flushes: one flusher thread, safe closing, a clean interpreter exit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from mlflowkit.store import Store
from mlflowkit.store._flush import Flusher
from mlflowkit.store.sqlite_index import SqliteIndex as Index


class _Slow:
    """A store stand-in whose sync takes a while and counts its calls."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls = 0
        self.started = threading.Event()

    def sync(self) -> None:
        self.started.set()
        time.sleep(self.seconds)
        self.calls += 1


def test_a_scheduled_store_is_synced_once_after_its_delay() -> None:
    flusher = Flusher()
    store = _Slow()
    flusher.schedule(store, 0.05)
    flusher.schedule(store, 0.05)  # already scheduled: one flush
    assert store.calls == 0
    deadline = time.monotonic() + 5
    while store.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert store.calls == 1
    flusher.stop()


def test_stop_waits_for_the_running_flush_and_ends_scheduling() -> None:
    flusher = Flusher()
    store = _Slow(seconds=0.3)
    flusher.schedule(store, 0.0)
    assert store.started.wait(5)
    flusher.stop()
    assert store.calls == 1  # stop returned only after the flush in progress ended
    flusher.schedule(store, 0.0)
    time.sleep(0.1)
    assert store.calls == 1


def test_a_cancelled_flush_does_not_run() -> None:
    flusher = Flusher()
    store = _Slow()
    flusher.schedule(store, 0.1)
    flusher.cancel(store)
    time.sleep(0.3)
    assert store.calls == 0
    flusher.stop()


def test_closing_the_index_leaves_another_live_threads_connection_usable(tmp_path: Path) -> None:
    index = Index(str(tmp_path / "index.sqlite"))
    have_conn, closed, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[object] = []

    def other() -> None:
        conn = index._conn()  # this thread's connection, held as a query would hold it
        have_conn.set()
        closed.wait(5)
        try:  # the main thread closed the index meanwhile: this connection must still work
            seen.append(conn.execute("SELECT 2").fetchone())
        except Exception as exc:
            seen.append(exc)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert have_conn.wait(5)
    index.query("SELECT 1")
    index.close()
    closed.set()
    assert done.wait(5)
    thread.join()
    assert seen[-1] == (2,)
    index.close()


def test_a_store_written_until_exit_exits_cleanly(tmp_path: Path) -> None:
    """Writes flushed every half millisecond right up to exit: no crash, every row indexed."""
    script = (
        "import sys, time\n"
        "from mlflowkit.store import Store\n"
        "st = Store(sys.argv[1], sync_interval=0.0005)\n"
        "end = time.time() + 0.4\n"
        "i = 0\n"
        "while time.time() < end:\n"
        "    st.put(i); i += 1\n"
        "print(i)\n"
    )
    for attempt in range(3):
        folder = tmp_path / f"s{attempt}"
        proc = subprocess.run(
            [sys.executable, "-c", script, str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        written = int(proc.stdout.strip())
        with Store(str(folder)) as store:
            indexed = store._idx().query("SELECT COUNT(*) FROM objects")[0][0]
        assert indexed == written
