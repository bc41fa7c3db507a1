"""Who owns a running run or a temp file, and whether that owner is provably gone.

An owner is a process: its host, the host's boot, its pid and when it started. A pid alone
is not enough (pids are reused); the start time (from ``/proc`` where there is one) and the
boot id tell a reused pid from the original process.

Invariants
----------
* ``dead(owner)`` is True only when it can be proven: the owner ran on this host (and boot)
  and its pid is gone, or is now another process (another start time), or the host has
  rebooted since. An owner on another host is never called dead here.
* The facts of this process are read once per process (again after a ``fork``).
"""

from __future__ import annotations

import os
from typing import Any

import blake3

__all__ = ["HOST", "dead", "host_tag", "owner", "pid_alive", "process_gone", "process_start"]

HOST = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


BOOT = _boot_id()


def host_tag() -> str:
    """8 hex characters naming this host and boot (what temp file names carry)."""
    return blake3.blake3(f"{HOST}\n{BOOT}".encode()).hexdigest()[:8]


def _proc_stat(pid: int) -> tuple[bytes, int] | None:
    """``(state, start time in clock ticks since boot)`` of process ``pid`` (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:  # the command name may hold spaces and parentheses: fields follow the last ")"
        fields = data[data.rindex(b")") + 2 :].split()
        return fields[0], int(fields[19])
    except (ValueError, IndexError):
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), or None if unknown."""
    got = _proc_stat(pid)
    return None if got is None else got[1]


def process_gone(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` (started at ``start``, when known) no longer runs here.

    A pid that is free, a zombie (exited, not yet reaped), or now another process (another
    start time) is gone.
    """
    if not pid_alive(pid):
        return True
    got = _proc_stat(pid)
    if got is None:
        return False
    state, now = got
    return state in (b"Z", b"X") or (start is not None and now != start)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # platforms without signal 0: assume it is there
        return True
    return True


_mine: tuple[int, dict[str, Any]] | None = None


def owner() -> dict[str, Any]:
    """This process as an owner: ``{"host", "boot", "pid", "start"}`` (JSON-able)."""
    global _mine
    pid = os.getpid()
    if _mine is None or _mine[0] != pid:
        _mine = (pid, {"host": HOST, "boot": BOOT, "pid": pid, "start": process_start(pid)})
    return dict(_mine[1])


def dead(who: Any) -> bool:
    """Whether the owner described by ``who`` (an ``owner()`` dict) is provably gone."""
    if not isinstance(who, dict) or who.get("host") != HOST:
        return False
    pid = who.get("pid")
    if type(pid) is not int:
        return False
    boot = who.get("boot")
    if boot is not None and BOOT is not None and boot != BOOT:
        return True  # the host rebooted since: every process of then is gone
    start = who.get("start")
    return process_gone(pid, start if type(start) is int else None)
