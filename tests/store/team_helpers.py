"""Functions run in spawned processes by the team-store tests (importable by name)."""

from __future__ import annotations

import os

import mlflowkit as mk


def publish_as_machine(url: str, index: str, machine: int, count: int) -> list[int]:
    """Publish ``count`` values as if from another machine (its own local cache folder)."""
    os.environ["MLFLOWKIT_CACHE_DIR"] = os.path.join(
        os.environ.get("MLFLOWKIT_CACHE_DIR", "/tmp"), f"machine-{machine}"
    )
    numbers = []
    with mk.Store(url, index=index) as store:
        for i in range(count):
            numbers.append(store.publish("team/model", {"machine": machine, "i": i}).version)
    return numbers
