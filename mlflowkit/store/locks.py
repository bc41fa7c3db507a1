"""Single-flight locks with a lease, kept as small files under ``<store>/locks/``.

Stores lock with these files when they have neither a PostgreSQL index (whose locks are the
database's) nor a local folder on a platform with kernel record locks (``mlflowkit.store.flight``,
chosen in ``mlflowkit.store.choice``): remote stores (S3, ``memory://``, any fsspec filesystem)
with the SQLite index, and local stores on Windows.

A lock file is created exclusively (``O_EXCL`` on a local disk) and holds who owns it: pid,
host, a random token, when it was taken and when its lease expires. While the lock is held, a
shared heartbeat thread pushes the expiry forward every third of the lease.

Invariants:

* At most one holder at a time on a local disk: creation is exclusive, and a holder removes
  the file only if it still holds its own token.
* A crashed holder cannot wedge a lock: its lease runs out (at most ``lease`` seconds after its
  last heartbeat), and on the same host a lock whose pid is no longer alive is stale at once.
* A stale lock is broken by renaming it aside and checking that what was renamed is the stale
  holder's file (not a fresh lock taken meanwhile, which is put back).
* Creation is exclusive wherever the objects seam's ``create_exclusive`` is: ``O_EXCL`` on a
  local disk, a conditional write (``If-None-Match``) on S3, a lock in this process for
  ``memory://``. Breaking a stale lock on S3 moves it aside with a copy and a delete, so two
  processes breaking the same stale lock at the same instant could both go on to create; the
  store stays correct (writes are atomic and idempotent), work is done twice. Stores whose
  single-flight must be exact across machines use a PostgreSQL index (``index=``), whose locks
  are the database's and die with their holder.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from mlflowkit.store.objects import ObjectStore
from mlflowkit.store.owner import pid_alive

__all__ = ["DEFAULT_LEASE_S", "Holder", "hold"]

DEFAULT_LEASE_S = 60.0
#: Seconds after which a lock file with no readable holder record counts as abandoned.
EMPTY_GRACE_S = 2.0
_HOST = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")


class Holder(NamedTuple):
    """What a lock file says about its owner."""

    token: str
    pid: int
    host: str
    acquired_at: float
    expires_at: float

    def encode(self) -> bytes:
        """The lock file's content."""
        return json.dumps(self._asdict()).encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        """Parse a lock file; None when it is empty or unreadable (being written, or junk)."""
        try:
            raw = json.loads(data)
            return cls(
                token=str(raw["token"]),
                pid=int(raw["pid"]),
                host=str(raw["host"]),
                acquired_at=float(raw["acquired_at"]),
                expires_at=float(raw["expires_at"]),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def stale(self, now: float) -> bool:
        """Whether the lease ran out, or the owner is a dead process on this host."""
        if self.expires_at < now:
            return True
        return self.host == _HOST and not pid_alive(self.pid)


def _new_holder(token: str, lease: float) -> Holder:
    now = time.time()
    return Holder(token=token, pid=os.getpid(), host=_HOST, acquired_at=now, expires_at=now + lease)


class _Heartbeats:
    """One daemon thread per process that pushes forward the leases of every held lock.

    Holding a lock then costs one exclusive create and one remove, with no thread per lock:
    single-flight stays cheap enough to wrap every step execution.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[int, str], tuple[ObjectStore, Holder, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._interval = float("inf")  # the loop's current wait

    def add(self, io: ObjectStore, path: str, holder: Holder, lease: float) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread does not exist here
                self._held, self._thread, self._pid = {}, None, os.getpid()
            self._held[(id(io), path)] = (io, holder, lease)
            if lease / 3 < self._interval:
                self._wake.set()  # a shorter lease: the loop must wake sooner from now on
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="mlflowkit-lock-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, io: ObjectStore, path: str) -> None:
        with self._lock:
            self._held.pop((id(io), path), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                items = list(self._held.items())
            interval = min((lease / 3 for _, (_, _, lease) in items), default=DEFAULT_LEASE_S / 3)
            with self._lock:
                self._interval = interval
            self._wake.wait(interval)
            self._wake.clear()
            with self._lock:
                items = list(self._held.items())
            now = time.time()
            for (_, path), (io, holder, lease) in items:
                if holder.expires_at - now > 2 * lease / 3:
                    continue  # taken less than a third of a lease ago
                with self._lock:
                    if self._held.get((id(io), path), (None, None))[1] is not holder:
                        continue  # released meanwhile
                current = Holder.decode(io.read(path) or b"")
                if current is None or current.token != holder.token:
                    self.remove(io, path)  # broken by someone else: nothing left to refresh
                    continue
                refreshed = Holder(
                    token=holder.token,
                    pid=holder.pid,
                    host=holder.host,
                    acquired_at=holder.acquired_at,
                    expires_at=time.time() + lease,
                )
                io.write_atomic(path, (refreshed.encode(),), False)
                with self._lock:
                    if (id(io), path) in self._held:
                        self._held[(id(io), path)] = (io, refreshed, lease)


_HEARTBEATS = _Heartbeats()


def _break(io: ObjectStore, path: str, stale: Holder | None) -> None:
    aside = f"{path}.broken-{os.urandom(8).hex()}"
    if not io.move(path, aside):
        return  # someone else broke (or released) it first
    moved = Holder.decode(io.read(aside) or b"")
    same = (moved is None and stale is None) or (
        moved is not None and stale is not None and moved.token == stale.token
    )
    if same or (moved is not None and moved.stale(time.time())):
        io.remove(aside)
        return
    # we moved a fresh lock taken after our look: put it back (unless yet another exists)
    if not io.restore(aside, path):
        io.remove(aside)


@contextmanager
def hold(
    io: ObjectStore,
    path: str,
    *,
    timeout: float,
    lease: float = DEFAULT_LEASE_S,
    poll: float = 0.005,
) -> Iterator[bool]:
    """Hold the lock at ``path`` for the ``with`` block; yield whether it was acquired.

    Parameters
    ----------
    io:
        The store backend's file operations.
    path:
        The lock file.
    timeout:
        Give up (and yield False) after this many seconds; ``0`` tries once.
    lease:
        Seconds a lock stays valid without a heartbeat.
    poll:
        First wait between attempts; doubles up to a quarter of a second.
    """
    token = os.urandom(16).hex()
    deadline = time.monotonic() + max(timeout, 0.0)
    delay = poll
    holder = _new_holder(token, lease)
    while True:
        holder = _new_holder(token, lease)
        if io.create_exclusive(path, holder.encode()):
            break
        data = io.read(path)
        if data is None:
            continue  # released between our attempt and our look: try again at once
        current = Holder.decode(data)
        if current is None:
            # empty or junk: being written right now, or left by a crash mid-write
            age = io.age(path)
            # writing a holder record takes microseconds: a file still empty after a short
            # grace was left by a process killed between creating and writing it
            if age is not None and age > min(lease, EMPTY_GRACE_S):
                _break(io, path, None)
                continue
        elif current.stale(time.time()):
            _break(io, path, current)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            yield False
            return
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)

    _HEARTBEATS.add(io, path, holder, lease)
    try:
        yield True
    finally:
        _HEARTBEATS.remove(io, path)
        current = Holder.decode(io.read(path) or b"")
        if current is not None and current.token == token:
            io.remove(path)
