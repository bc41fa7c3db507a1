"""What the results page says about the machine: CPU, cores, memory, OS, Python, packages."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["PACKAGES", "describe"]

#: distributions whose versions are recorded with the results
PACKAGES = (
    "numpy",
    "blake3",
    "dask",
    "distributed",
    "apache-hamilton",
    "prefect",
    "redun",
    "joblib",
    "xxhash",
    "scikit-learn",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError, AttributeError):
        return None


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _versions() -> dict[str, str]:
    import mlflowkit

    found = {"mlflowkit": mlflowkit.__version__}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe() -> dict[str, Any]:
    """A JSON-able description of this machine and software."""
    return {
        "cpu": _cpu_model(),
        "cores": _usable_cores(),
        "cpu_count": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": _versions(),
    }
