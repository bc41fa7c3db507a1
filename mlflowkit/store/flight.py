"""Single-flight locks of a local store: kernel record locks on one file, ``locks/flight``.

Layer 5 (part of the store's implementation). A lock on a key is a POSIX byte-range lock
(``fcntl.lockf``) on one byte of ``<store>/locks/flight``, at an offset taken from the key. Taking
and releasing one costs two system calls and no file is created or removed, where a lock file
(``mlflowkit.store.locks``) costs an exclusive create and a remove: a large share of a cached
step's whole cost on a local disk. The file stays empty; it is made on first use and never
deleted (nothing that sweeps a store looks at ``locks/flight``: gc, ``sweep_tmp`` and the
maintenance commands only touch names of their own shapes).

Record locks belong to a process, not to a thread or a file descriptor, and that shapes this
module:

* One ``_FlightFile`` per process and lock file (a registry keyed by ``(pid, realpath)``): two
  ``Store`` objects on one folder in one process share it, and a forked child never uses its
  parent's (the child holds none of the parent's locks).
* Threads of one process never exclude each other through record locks, so a per-key
  ``threading.Lock`` (refcounted, dropped when unused) makes them take turns first; only the
  thread whose turn it is asks the kernel.
* Closing any descriptor of the file drops every lock the process holds on it. The file is
  opened only through ``_FlightFile``, once, and closed only when this process holds no lock on
  it (so an idle store keeps no descriptor open, and a store folder made again is locked
  afresh). A descriptor inherited from a parent across ``fork`` is never closed in the child.

Invariants:

* At most one holder per key among the processes of one machine, and among the threads of one
  process.
* A holder that dies (``kill -9`` included) releases at once: the kernel drops a process's locks
  when it exits. There is no lease to wait for and no heartbeat.
* Two keys share a byte only if the first 60 bits of their digests agree: a collision would
  make two keys wait for each other, never let two holders of one key in.

On a network filesystem the exclusion is the filesystem's POSIX locks: NFSv4 has them (NFSv3
with its lock manager running); a mount without them (``nolock``, some FUSE filesystems) keeps
them on each client only. Stores shared between machines on such a filesystem, or whose single
flight must hold across machines whatever the filesystem, use a PostgreSQL index
(``index="postgresql://…"``), whose locks are the database's. Processes of an earlier mlflowkit
on the same store lock with files and so do not exclude these: the store stays correct (writes
are atomic and idempotent), work may be done twice.

Platforms without ``fcntl`` (Windows) keep lock files; the choice is made in
``mlflowkit.store.choice.index_opener`` (``RECORD_LOCKS``).
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import blake3

from mlflowkit.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows: local stores lock with files (``mlflowkit.store.locks``)
    RECORD_LOCKS = False
else:
    RECORD_LOCKS = True

__all__ = ["FLIGHT_FILE", "RECORD_LOCKS", "LocalLocks", "offset_of"]

#: the lock file, under the store's ``locks/`` folder
FLIGHT_FILE = "flight"
_HEX_KEY = re.compile(r"[0-9a-f]{64}")
#: errors meaning "held by another process" (``lockf`` raises either, by platform)
_HELD = (errno.EAGAIN, errno.EACCES)
_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.1


def offset_of(name: str) -> int:
    """The byte of the lock file that stands for ``name``: 60 bits of its digest.

    A cache key (64 hex digits) is a digest already; any other name is hashed with BLAKE3.
    """
    digest = name if _HEX_KEY.fullmatch(name) else blake3.blake3(name.encode()).hexdigest()
    return int(digest[:15], 16)


class _Turn:
    """A key's in-process lock and how many threads want it (to drop it when none does)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class _FlightFile:
    """The lock file of one store in one process: its descriptor and the keys' turns."""

    def __init__(self, path: str, url: str) -> None:
        self.path = path
        self.url = url
        self._mutex = threading.Lock()  # guards the fd and ``_held``, and every use of the fd
        self._fd = -1  # open only while this process holds a lock on the file
        self._held = 0  # record locks this process holds on the file
        # the turns have a mutex of their own, never held across a system call: a thread
        # taking its turn never waits for another's lockf (releasing a batch's parked locks)
        self._turns_mutex = threading.Lock()
        self._turns: dict[int, _Turn] = {}

    # turns (threads of this process) ---------------------------------------------------------
    def enter(self, offset: int) -> threading.Lock:
        """The in-process lock of ``offset``, counted as wanted until ``leave``."""
        with self._turns_mutex:
            turn = self._turns.get(offset)
            if turn is None:
                turn = self._turns[offset] = _Turn()
            turn.users += 1
            return turn.lock

    def leave(self, offset: int) -> None:
        """No longer wanted by this thread: dropped when no thread wants it."""
        with self._turns_mutex:
            turn = self._turns[offset]
            turn.users -= 1
            if turn.users == 0:
                del self._turns[offset]

    # record locks (processes) ----------------------------------------------------------------
    def try_lock(self, offset: int) -> bool:
        """Take the record lock on byte ``offset`` if no other process holds it."""
        with self._mutex:
            fd = self._open()
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as exc:
                self._close_if_idle()
                if exc.errno in _HELD:
                    return False
                raise self._refused(exc) from None
            self._held += 1
            return True

    def unlock(self, offset: int) -> None:
        """Release the record lock on byte ``offset``; close the file once none is held."""
        with self._mutex:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)
            finally:
                self._held -= 1
                self._close_if_idle()

    def _open(self) -> int:
        if self._fd < 0:
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            try:
                try:
                    self._fd = os.open(self.path, flags, 0o666)
                except FileNotFoundError:  # locks/ was removed: made again, as for lock files
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                    self._fd = os.open(self.path, flags, 0o666)
            except OSError as exc:
                raise StoreError(
                    f"cannot open the single-flight lock file {self.path} of the store "
                    f"{self.url}: {exc}. Expected a writable store folder; check its "
                    "permissions and free space.",
                    url=self.url,
                ) from None
        return self._fd

    def _close_if_idle(self) -> None:
        # closing any descriptor of the file would drop every lock this process holds on it
        if self._held == 0 and self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _refused(self, exc: OSError) -> StoreError:
        return StoreError(
            f"the filesystem of the store {self.url} refused a POSIX record lock on "
            f"{self.path}: {exc}. Expected a filesystem with POSIX locks (local disks, NFSv4); "
            "on one without them, index the store in PostgreSQL (index='postgresql://…'), "
            "whose locks are the database's.",
            url=self.url,
        )


class _Registry:
    """The ``_FlightFile`` of each (process, lock file): one shared by every store object.

    Keyed by pid, so a forked child makes its own (it holds none of its parent's locks). The
    parent's entries are left alone in the child, their descriptors never closed there: closing
    an inherited descriptor of the file would drop the locks the child takes on it. No lock
    guards the dict (``setdefault`` is atomic), so none can be left held by a fork.
    """

    def __init__(self) -> None:
        self._files: dict[tuple[int, str], _FlightFile] = {}

    def get(self, pid: int, path: str, url: str) -> _FlightFile:
        found = self._files.get((pid, path))
        if found is None:
            found = self._files.setdefault((pid, path), _FlightFile(path, url))
        return found


_REGISTRY = _Registry()


class LocalLocks:
    """Single-flight locks of a local store, with the interface of the PostgreSQL index's.

    ``lock(name, timeout)``, ``check()`` and ``close()``, as ``StoreCore`` calls them.

    Parameters
    ----------
    root:
        The store's local folder.
    url:
        The store's URL, for error messages.
    """

    def __init__(self, root: str, url: str) -> None:
        self.root = root
        self.url = url
        self._path: str | None = None  # the lock file's real path, resolved on first use
        self._file: tuple[int, _FlightFile] | None = None  # (pid, shared file) last used

    def _flight(self) -> _FlightFile:
        pid = os.getpid()
        cached = self._file
        if cached is not None and cached[0] == pid:
            return cached[1]
        if self._path is None:
            # resolved once the store exists, so that two spellings of one folder share a file
            self._path = os.path.join(os.path.realpath(self.root), "locks", FLIGHT_FILE)
        flight = _REGISTRY.get(pid, self._path, self.url)
        self._file = (pid, flight)
        return flight

    @contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[bool]:
        """Hold the lock on ``name`` for the ``with`` block; yield whether it was acquired.

        Threads of this process wait their turn on an in-process lock; the thread whose turn it
        is polls the kernel (5 ms doubling up to 0.1 s) while another process holds the key.

        Parameters
        ----------
        name:
            The lock's name (a cache key, or any name ``LOCK_NAME`` accepts).
        timeout:
            Give up (and yield False) after this many seconds; ``0`` tries once.

        Raises
        ------
        StoreError
            The lock file cannot be opened, or its filesystem refuses record locks.
        """
        flight = self._flight()
        offset = offset_of(name)
        deadline = time.monotonic() + max(timeout, 0.0)
        turn = flight.enter(offset)
        try:
            remaining = deadline - time.monotonic()
            got = turn.acquire(timeout=remaining) if remaining > 0 else turn.acquire(blocking=False)
            if not got:
                yield False
                return
            try:
                delay = _FIRST_POLL_S
                while not flight.try_lock(offset):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        yield False
                        return
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, _MAX_POLL_S)
                try:
                    yield True
                finally:
                    flight.unlock(offset)
            finally:
                turn.release()
        finally:
            flight.leave(offset)

    def check(self) -> None:
        """Nothing to check before work starts: the lock file is opened on first use."""

    def close(self) -> None:
        """Nothing to close: the lock file is closed whenever no lock on it is held."""
