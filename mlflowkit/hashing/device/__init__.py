"""Device hashing: BLAKE3 of device arrays, computed on the GPU (public as ``mlflowkit.gpu``).

``mlflowkit.gpu.blake3(buf)`` returns the same 32 bytes as ``blake3.blake3(bytes(buf)).digest()``
without copying ``buf`` to the host. ``device_data_digest(arr)`` is the inner data digest of
``mlflowkit.hash_value`` for device arrays (the BLAKE3 of the array's bytes in C order), so
that a CuPy array and the equal NumPy array get the same ``hash_value``.

Invariants
----------
* Importing this module is cheap: it imports neither Numba nor CuPy. The kernels are built on
  the first digest and cached for the process.
* Digests are bit-identical to the reference BLAKE3 for every input length, on a device and in
  Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which must be set before Numba is
  imported), where the very same kernels run on the CPU.
* Nothing is silently computed on the host: without a device (or the simulator) the digest
  functions raise :class:`~mlflowkit.errors.ExecutorError`.
"""

from __future__ import annotations

__all__ = ["available", "blake3", "device_data_digest", "is_device_array", "simulated"]

from mlflowkit.hashing.device._device import available, is_device_array, simulated


def blake3(buf: object) -> bytes:
    """BLAKE3 digest of a contiguous device buffer, computed on the device.

    Parameters
    ----------
    buf:
        A C-contiguous device array (CuPy array, Numba device array, anything exposing
        ``__cuda_array_interface__``, or a simulator device array), of any dtype and shape;
        its bytes are hashed in memory order.

    Returns
    -------
    bytes
        The 32-byte digest, equal to ``blake3.blake3(data).digest()`` of the same bytes.

    Raises
    ------
    HashingError
        ``buf`` is not a device array, is masked, or is not C-contiguous (make a contiguous
        copy, e.g. ``cupy.ascontiguousarray(buf)``, or use :func:`device_data_digest`).
    ExecutorError
        Numba's CUDA target is not installed, or there is neither a device nor the simulator.

    Examples
    --------
    >>> import cupy  # doctest: +SKIP
    >>> mlflowkit.gpu.blake3(cupy.arange(10, dtype=cupy.uint8)).hex()  # doctest: +SKIP
    """
    from mlflowkit.hashing.device._device import digest

    return digest(buf, allow_copy=False)


def device_data_digest(arr: object) -> bytes:
    """BLAKE3 of a device array's bytes in C order, computed on the device.

    This is the data digest of ``mlflowkit.hash_value`` for arrays: for a device array ``a``
    equal to the NumPy array ``h``,
    ``device_data_digest(a) == blake3.blake3(h.tobytes()).digest()``.

    Parameters
    ----------
    arr:
        A device array of any dtype, shape and strides (Fortran-ordered, sliced, negative
        strides). A non-contiguous array is first gathered into a C-ordered copy on the
        device (temporary device memory of the array's size); a contiguous one is read in
        place (a misaligned one is copied device-to-device first).

    Returns
    -------
    bytes
        The 32-byte digest.

    Raises
    ------
    HashingError
        ``arr`` is not a device array, or is masked.
    ExecutorError
        Numba's CUDA target is not installed, or there is neither a device nor the simulator.
    """
    from mlflowkit.hashing.device._device import digest

    return digest(arr, allow_copy=True)
