"""How the ``processes`` executor cuts a burst of ready tasks into batches.

A round trip to a worker process costs tens of microseconds (pickling, two pipe messages, two
thread wake-ups), more than a trivial step. Sending several tasks of the same step in one
message spreads that cost over them, as joblib does with ``batch_size="auto"``.

Invariants
----------
* A batch holds calls of one step only, and at least one call.
* A call with a ``timeout`` hint is a batch of its own (its deadline is its own).
* A step not seen yet goes in batches of at most ``UNKNOWN_MAX`` calls; once seen, its batches
  aim to run about ``TARGET_S`` (from its calls' mean duration, learned per executor), with at
  most ``MAX_TASKS`` calls, and a burst is cut into at least two batches per worker when it is
  big enough, so that every worker gets some of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["MAX_TASKS", "TARGET_S", "UNKNOWN_MAX", "Durations", "batch_size", "cut"]

#: How long (seconds) a batch of a step's calls aims to run.
TARGET_S = 0.005
#: Most calls in one batch.
MAX_TASKS = 256
#: Most calls in one batch of a step whose duration is not known yet.
UNKNOWN_MAX = 8

T = TypeVar("T")


class Durations:
    """The mean duration of each step's calls (by qualified name), as the executor saw them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, step: str, seconds: float) -> None:
        """Count calls of ``step`` that took ``seconds`` each, on average (a moving mean:
        recent calls weigh more)."""
        old = self.seconds.get(step)
        self.seconds[step] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def get(self, step: str) -> float | None:
        """The mean duration of ``step``'s calls, or None when none was seen."""
        return self.seconds.get(step)


def batch_size(count: int, seconds: float | None, workers: int) -> int:
    """Calls per batch for ``count`` ready calls of a step taking ``seconds`` each (None:
    unknown) on ``workers`` workers."""
    if seconds is None:
        cap = UNKNOWN_MAX
    else:
        cap = max(1, min(MAX_TASKS, int(TARGET_S / max(seconds, 1e-7))))
    spread = -(-count // (2 * workers))  # at least two batches per worker
    return max(1, min(cap, spread))


def cut(
    items: list[T],
    step_of: Callable[[T], str],
    timed: Callable[[T], bool],
    durations: Durations,
    workers: int,
) -> list[list[T]]:
    """Cut ``items`` (ready calls, in order) into batches (see the module's invariants)."""
    batches: list[list[T]] = []
    groups: dict[str, list[T]] = {}
    for item in items:
        if timed(item):
            batches.append([item])
        else:
            groups.setdefault(step_of(item), []).append(item)
    for step, group in groups.items():
        size = batch_size(len(group), durations.get(step), workers)
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches
