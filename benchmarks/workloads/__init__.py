"""The workloads, in the order they run and print.

Each module has ``groups(cfg) -> list[Group]``; a workload is selected by its letter or name.
"""

from __future__ import annotations

from benchmarks.workloads import bigcache, chain, digits, fanout, hashing, imports, rerun

#: letter -> (name accepted by --only, module)
WORKLOADS = {
    "A": ("chain", chain),
    "B": ("fanout", fanout),
    "C": ("rerun", rerun),
    "D": ("bigcache", bigcache),
    "E": ("hash", hashing),
    "F": ("import", imports),
    "G": ("digits", digits),
}

__all__ = ["WORKLOADS"]
