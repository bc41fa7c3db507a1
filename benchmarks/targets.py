"""mlflowkit's performance targets, in one table.

Each target applies to mlflowkit's row of one metric (``row_id``). ``bound`` is an upper limit
for times and memory (``"<="``) and a lower limit for rates (``">="``); ``peer`` recalls the
peer figure the target was set against. The report prints the measured value next to each target
as a ratio (measured / target) and says met or missed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TARGETS", "Target", "assess"]


@dataclass(frozen=True)
class Target:
    """A goal for one metric of mlflowkit."""

    row_id: str
    bound: str  # "<=" or ">="
    value: float
    unit: str
    peer: str = ""

    def met(self, measured: float) -> bool:
        """Whether ``measured`` (in ``unit``) meets the target."""
        return measured <= self.value if self.bound == "<=" else measured >= self.value

    def text(self) -> str:
        """``"≤ 10 µs/step"``."""
        sign = "≤" if self.bound == "<=" else "≥"
        return f"{sign} {self.value:g} {self.unit}"


#: the targets, keyed by metric row id (see the workload modules)
TARGETS: dict[str, Target] = {
    t.row_id: t
    for t in (
        Target("chain/orchestration", "<=", 10, "µs/step", "Hamilton ≈ 30 µs/step"),
        Target("chain/persisted", "<=", 100, "µs/step", "joblib.Memory ≈ 780 µs/step"),
        Target("fanout/threads", "<=", 10, "µs/task"),
        Target("fanout/cluster", "<=", 500, "µs/task", "Dask ≈ 1.6 ms/task"),
        Target(
            "rerun/run", "<=", 20, "µs/step", "joblib.Memory ≈ 90 µs/step, Hamilton ≈ 230 µs/step"
        ),
        Target("bigcache/time", "<=", 0.1, "s", "joblib.Memory ≈ 1.2 s"),
        Target("hash/throughput", ">=", 15, "GB/s", "on 2 cores"),
        Target("import/time", "<=", 150, "ms"),
    )
}


def assess(row_id: str, measured: float | None) -> tuple[Target, float, bool] | None:
    """``(target, measured / target, met)`` for a row with a target and a measurement."""
    target = TARGETS.get(row_id)
    if target is None or measured is None:
        return None
    return target, measured / target.value, target.met(measured)
