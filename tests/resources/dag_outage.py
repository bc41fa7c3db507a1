"""A chain whose third step stops the index's PostgreSQL server (a database that goes away)."""

from __future__ import annotations

import os
import signal
import socket
import time

import mlflowkit as mk

#: ``pid:port`` of the server the ``outage`` step stops (unset: the step stops nothing)
STOP_ENV = "MLFLOWKIT_TEST_STOP_SERVER"


@mk.step
def add(x: int) -> int:
    return x + 1


@mk.step
def outage(x: int) -> int:
    """Add one; first stop the server named in ``$MLFLOWKIT_TEST_STOP_SERVER`` and wait for it."""
    target = os.environ.get(STOP_ENV)
    if target:
        pid, port = (int(part) for part in target.split(":"))
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown: every session ends
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                break
            time.sleep(0.05)
    return x + 1


@mk.pipeline
def chain_with_outage(n: int = 6) -> int:
    x = 0
    for i in range(n):
        x = outage(x) if i == 2 else add(x)
    return x
