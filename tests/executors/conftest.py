"""Fixtures of the executor tests: one Dask LocalCluster for the whole session.

The cluster has two worker processes with one thread each and a ``gpu`` resource of 1 per
worker (so resource placement can be tested on a CPU-only machine). Dask gives up on a task
after it killed workers twice (``allowed-failures = 1``), which keeps the worker-death tests
short.

Some tests kill workers on purpose; their nannies start new ones, which takes a moment. Every
test that asks for ``dask_address`` gets the cluster whole: the fixture waits until all its
workers are back, so what one test did to the cluster never shows in the next (a test counting
the cluster's GPUs saw one of two, in two full runs out of three).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

#: the session cluster's size, which ``dask_address`` waits for
N_WORKERS = 2
#: how long ``dask_address`` waits for killed workers to be replaced (seconds)
WORKERS_BACK_S = 60


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A running ``distributed.LocalCluster`` shared by the Dask tests."""
    pytest.importorskip("distributed")
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(
            n_workers=N_WORKERS,
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
def dask_watcher(dask_cluster: Any) -> Iterator[Any]:
    """A client of the session cluster that the tests never use: it only waits for workers."""
    from distributed import Client

    client = Client(dask_cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


def wait_until_whole(cluster: Any, client: Any) -> None:
    """Return once the session cluster runs all of its workers again.

    Whole means: each nanny has a worker, and the scheduler lists exactly those workers as
    running (a dead worker it still lists, or a new one it does not list yet, is waited for).
    """
    deadline = time.monotonic() + WORKERS_BACK_S
    while True:
        nannies = {nanny.worker_address for nanny in list(cluster.workers.values())}
        listed = client.scheduler_info(n_workers=-1)["workers"]
        running = {a for a, w in listed.items() if w.get("status", "running") == "running"}
        if len(nannies) == N_WORKERS and None not in nannies and running == nannies:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the session Dask cluster did not get its {N_WORKERS} workers back within "
                f"{WORKERS_BACK_S} s: the nannies have {nannies}, the scheduler lists {running}"
            )
        time.sleep(0.05)


@pytest.fixture
def dask_address(dask_cluster: Any, dask_watcher: Any) -> str:
    """The session cluster's scheduler address, once all of its workers are running."""
    wait_until_whole(dask_cluster, dask_watcher)
    return str(dask_cluster.scheduler_address)


@pytest.fixture
def dask_ex(dask_address: str) -> Iterator[Any]:
    """A ``dask`` executor on the session cluster, shut down after the test."""
    import mlflowkit as mk

    ex = mk.executors.get("dask", address=dask_address)
    try:
        yield ex
    finally:
        ex.shutdown()
