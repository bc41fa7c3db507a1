"""``mlflowkit.gpu``: BLAKE3 on the GPU, digests of device arrays computed where the data lives.

The public names of the device hashing in :mod:`mlflowkit.hashing.device` (which ``hash_value``
uses for device arrays, so it lives with the rest of hashing): ``blake3(buf)`` returns the same
32 bytes as ``blake3.blake3(bytes(buf)).digest()`` without copying ``buf`` to the host, and
``device_data_digest(arr)`` is the data digest of ``mlflowkit.hash_value`` for device arrays.

Invariant: importing this module is cheap (neither Numba nor CuPy is imported); nothing is
silently computed on the host.
"""

from __future__ import annotations

from mlflowkit.hashing.device import (
    available,
    blake3,
    device_data_digest,
    is_device_array,
    simulated,
)

__all__ = ["available", "blake3", "device_data_digest", "is_device_array", "simulated"]
