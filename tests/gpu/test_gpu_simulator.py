"""The BLAKE3 kernels run in Numba's CUDA simulator (see ``gpu_sim_checks.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.mark.slow
def test_kernels_in_the_cuda_simulator(run_checks: Callable[..., None]) -> None:
    pytest.importorskip("numba", reason="the CUDA simulator is part of Numba")
    run_checks("gpu_sim_checks.py", simulator=True)
