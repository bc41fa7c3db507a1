"""The public surface of :mod:`mlflowkit.gpu` that needs neither Numba nor a device."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import mlflowkit.gpu as mkgpu


def test_public_names() -> None:
    assert sorted(mkgpu.__all__) == [
        "available",
        "blake3",
        "device_data_digest",
        "is_device_array",
        "simulated",
    ]


def test_import_is_light() -> None:
    code = (
        "import sys, mlflowkit.gpu as g; "
        "g.is_device_array(1); "
        "heavy = sorted(m for m in ('numba', 'cupy', 'numba.cuda') if m in sys.modules); "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


class _Exporter:
    def __init__(self, iface: Any) -> None:
        self._iface = iface

    @property
    def __cuda_array_interface__(self) -> Any:
        if isinstance(self._iface, Exception):
            raise self._iface
        return self._iface


class _FakeSimulatorArray:
    __cuda_ndarray__ = True


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (np.zeros(3), False),
        (b"bytes", False),
        (None, False),
        (_Exporter({"shape": (1,), "typestr": "|u1", "data": (0, False), "version": 3}), True),
        (_Exporter(TypeError("a CPU tensor has no CUDA interface")), False),
        (_Exporter(None), False),
        (_FakeSimulatorArray(), True),
    ],
)
def test_is_device_array(obj: object, expected: bool) -> None:
    assert mkgpu.is_device_array(obj) is expected


def test_checks_without_the_simulator(run_checks: Callable[..., None]) -> None:
    pytest.importorskip("numba", reason="the device code is written with Numba")
    run_checks("gpu_host_checks.py", simulator=False)


@pytest.mark.parametrize("digest", [mkgpu.blake3, mkgpu.device_data_digest])
def test_host_values_are_refused_before_looking_for_a_device(digest: Any) -> None:
    from mlflowkit.errors import HashingError

    with pytest.raises(HashingError, match=r"expected a device array .* found numpy\.ndarray"):
        digest(np.zeros(3))
