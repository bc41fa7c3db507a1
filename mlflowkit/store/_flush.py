"""Getting writes to stable storage: background flushes (one thread for all stores), syncfs.

A store that buffered writes asks for a flush some seconds later (``schedule``); the flusher
thread calls its ``sync()`` when that time comes. One long-lived thread (not a timer thread
per flush) means one index connection for all background flushes.

Invariants
----------
* ``stop()`` (at interpreter exit) returns only once no flush is running, so the exiting
  thread can then sync and close every store without another thread using its index.
* A child process made by ``fork`` starts with no flusher thread and nothing scheduled; the
  parent's schedule belongs to the parent.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Protocol

__all__ = ["FLUSHER", "Flusher", "sync_filesystem"]


class _Syncable(Protocol):
    def sync(self) -> None: ...


class Flusher:
    """Calls ``sync()`` of scheduled stores when their time comes, on one daemon thread."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, weakref.ref[_Syncable]]] = {}
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopped = False

    def schedule(self, store: _Syncable, delay: float) -> None:
        """Flush ``store`` within ``delay`` seconds (kept if a flush is already scheduled)."""
        with self._cond:
            if self._stopped or id(store) in self._due:
                return
            self._due[id(store)] = (time.monotonic() + delay, weakref.ref(store))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="mlflowkit-store-flush", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def cancel(self, store: _Syncable) -> None:
        """Forget a scheduled flush of ``store`` (it synced itself)."""
        with self._cond:
            self._due.pop(id(store), None)

    def stop(self, timeout: float = 30.0) -> None:
        """Run no more flushes; wait up to ``timeout`` seconds for a running one to end."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            while self._busy and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)

    def _next(self) -> list[weakref.ref[_Syncable]] | None:
        """Wait for the stores due now; None once stopped."""
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                due = [k for k, (at, _) in self._due.items() if at <= now]
                if due:
                    self._busy = True
                    return [self._due.pop(k)[1] for k in due]
                wait = min((at for at, _ in self._due.values()), default=now + 3600.0) - now
                self._cond.wait(wait)
            return None

    def _loop(self) -> None:
        while (refs := self._next()) is not None:
            try:
                for ref in refs:
                    store = ref()
                    if store is None:
                        continue
                    try:
                        store.sync()
                    except Exception:  # a failed sync keeps its rows; the next sync retries
                        self.schedule(store, 1.0)
                    del store
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


#: The flusher of this process.
FLUSHER = Flusher()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FLUSHER._reset)


_SYNCFS: Any = None


def sync_filesystem(path: str) -> None:
    """Flush the filesystem holding ``path`` to stable storage (``syncfs``, else ``sync``)."""
    global _SYNCFS
    if _SYNCFS is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _SYNCFS = libc.syncfs
        except (OSError, AttributeError):
            _SYNCFS = False
    if _SYNCFS:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                if _SYNCFS(fd) == 0:
                    return
            finally:
                os.close(fd)
    os.sync()
