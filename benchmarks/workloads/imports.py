"""Workload F: import time, in ms.

Each measurement starts two fresh interpreters back to back, ``python -c pass`` and
``python -c "<import statement>"``, and reports the difference of their wall times: the cost of
the import alone, with the interpreter's own start-up taken out.
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.core import Bench, Case, Config, Group, Metric

__all__ = ["groups"]


def _wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


class ImportBench(Bench):
    """``python -c "<statement>"`` minus ``python -c pass``."""

    def __init__(self, cfg: Config, statement: str) -> None:
        super().__init__(cfg)
        self.statement = statement
        _wall(statement)  # fails here (an error row) if the import does not work

    def once(self) -> dict[str, float]:
        baseline = _wall("pass")
        return {"s": _wall(self.statement) - baseline}


def groups(cfg: Config) -> list[Group]:
    """The import time comparison."""
    factory = "benchmarks.workloads.imports:ImportBench"

    def case(statement: str, family: str, kind: str = "peer", **extra: object) -> Case:
        return Case(statement, family, factory, {"statement": statement}, kind=kind, **extra)

    return [
        Group(
            "F",
            "import",
            "fresh interpreter, minus `python -c pass`",
            1,
            (Metric("s", "import/time", "", "ms", scale=1e3),),
            (
                case("import mlflowkit", "mlflowkit", kind="mlflowkit"),
                case("import dask", "dask", requires=("dask",), install="dask"),
                case(
                    "from prefect import flow", "prefect", requires=("prefect",), install="prefect"
                ),
                case(
                    "from hamilton import driver",
                    "hamilton",
                    requires=("hamilton",),
                    install="apache-hamilton",
                ),
                case("from redun import task", "redun", requires=("redun",), install="redun"),
                case("import joblib", "joblib", requires=("joblib",), install="joblib"),
            ),
            shared=True,
        )
    ]
