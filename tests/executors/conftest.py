"""Fixtures of the executor tests: one Dask LocalCluster for the whole session.

The cluster has two worker processes with one thread each and a ``gpu`` resource of 1 per
worker (so resource placement can be tested on a CPU-only machine). Dask gives up on a task
after it killed workers twice (``allowed-failures = 1``), which keeps the worker-death tests
short.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A running ``distributed.LocalCluster`` shared by the Dask tests."""
    pytest.importorskip("distributed")
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never warn that 8787 is taken
            resources={"gpu": 1},
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def dask_address(dask_cluster: Any) -> str:
    """The session cluster's scheduler address."""
    return str(dask_cluster.scheduler_address)
