"""Device buffers: from any CUDA array object to the byte views the BLAKE3 kernels read.

An input is described by its ``__cuda_array_interface__`` (CuPy, Numba, PyTorch, ...): a data
pointer, a shape, strides in bytes and a type string. Only its bytes matter: they are hashed in C
order, whatever the dtype.

Invariants
----------
* The data never goes through the host. A C-contiguous buffer whose address is a multiple of 4
  is read in place; a misaligned one is first copied device-to-device into a fresh (aligned)
  buffer; a non-contiguous array is gathered into C order on the device (``device_data_digest``
  only: ``blake3`` refuses it). Only the 32-byte digest is copied back.
* In Numba's CUDA simulator "device" memory is host memory: a simulated device array is read
  through the same description (its NumPy ``__array_interface__``), so the simulator runs the
  same pointer, stride and view logic as a real device.
* Numba is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlflowkit.errors import ExecutorError, HashingError

__all__ = [
    "Prepared",
    "available",
    "cuda_module",
    "digest",
    "is_device_array",
    "prepare",
    "simulated",
]

# The simulator runs one kernel at a time (it asserts so), and its kernels mutate their launch
# configuration; simulated digests are therefore serialised.
_SIM_LOCK = threading.Lock()

_INSTALL_HINT = "install the GPU extra: pip install 'mlflowkit[gpu]'"


def _type_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def simulated() -> bool:
    """Whether Numba's CUDA simulator is enabled (``NUMBA_ENABLE_CUDASIM=1``).

    Returns
    -------
    bool
        ``False`` when Numba is not installed.
    """
    try:
        numba: Any = importlib.import_module("numba")
    except ImportError:
        return False
    return bool(numba.config.ENABLE_CUDASIM)


def available() -> bool:
    """Whether a real CUDA device can be used here (the simulator does not count).

    Returns
    -------
    bool
        ``True`` when Numba's CUDA target is installed, not simulated, and finds a device.
    """
    if simulated():
        return False
    try:
        cuda: Any = importlib.import_module("numba.cuda")
    except ImportError:
        return False
    return bool(cuda.is_available())


def is_device_array(obj: object) -> bool:
    """Whether ``obj`` is an array in CUDA device memory.

    True for objects that export ``__cuda_array_interface__`` (CuPy and Numba device arrays,
    CUDA tensors, ...) and for the simulator's device arrays. Cheap: imports nothing.

    Parameters
    ----------
    obj:
        Any object.

    Returns
    -------
    bool
    """
    cls = type(obj)
    if hasattr(cls, "__cuda_array_interface__"):
        try:
            return isinstance(obj.__cuda_array_interface__, Mapping)  # type: ignore[attr-defined]
        except (AttributeError, TypeError, RuntimeError, ValueError):
            # e.g. a CPU tensor of a library whose tensor class declares the interface
            return False
    return getattr(cls, "__cuda_ndarray__", False) is True


def cuda_module() -> Any:
    """``numba.cuda``, with a usable device or the simulator, else :class:`ExecutorError`."""
    try:
        cuda: Any = importlib.import_module("numba.cuda")
    except ImportError as exc:
        raise ExecutorError(
            "hashing on the device needs Numba's CUDA target; found no numba; " + _INSTALL_HINT
        ) from exc
    if not simulated() and not cuda.is_available():
        raise ExecutorError(
            "hashing on the device needs a CUDA device; found none (numba.cuda.is_available() "
            "is False); run on a GPU machine, or set NUMBA_ENABLE_CUDASIM=1 before importing "
            "numba to use the simulator"
        )
    return cuda


def _require_device_array(obj: object) -> None:
    if not is_device_array(obj):
        raise HashingError(
            f"expected a device array (an object with __cuda_array_interface__, such as a CuPy "
            f"or Numba device array), found {_type_name(obj)}; hash host data with "
            f"blake3.blake3(bytes) or mlflowkit.hash_value",
            type_name=_type_name(obj),
        )


def _describe(obj: object, sim: bool) -> dict[str, Any]:
    """The array-interface description of a device array (see the module docstring)."""
    _require_device_array(obj)
    if sim:
        if hasattr(type(obj), "__cuda_array_interface__"):
            raise ExecutorError(
                f"the CUDA simulator is enabled, so it cannot read the device memory of a "
                f"{_type_name(obj)}; unset NUMBA_ENABLE_CUDASIM to hash it on the device"
            )
        desc = obj.__array_interface__  # type: ignore[attr-defined]
    else:
        desc = getattr(obj, "__cuda_array_interface__", None)
        if not isinstance(desc, Mapping):
            raise HashingError(
                f"expected a device array exporting __cuda_array_interface__, found a "
                f"{_type_name(obj)} without it (a simulator array while the simulator is off?)",
                type_name=_type_name(obj),
            )
    if desc.get("mask") is not None:
        raise HashingError(
            f"expected a device array without a mask, found a masked {_type_name(obj)}; "
            f"fill the masked values and hash the plain array",
            type_name=_type_name(obj),
        )
    return dict(desc)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _is_c_contiguous(
    shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int
) -> bool:
    if strides is None or math.prod(shape) <= 1:
        return True
    expected = _c_strides(shape, itemsize)
    return all(n == 1 or s == e for n, s, e in zip(shape, strides, expected, strict=True))


class _Interface:
    """A minimal ``__cuda_array_interface__`` exporter over part of another object's memory.

    It holds a reference to the owner so that the memory outlives every view made from it.
    """

    def __init__(self, desc: dict[str, Any], owner: object) -> None:
        self.__cuda_array_interface__ = desc
        self.owner = owner


def _pointer(arr: Any, sim: bool) -> int:
    """Address of the first byte of a device array made by :func:`numba.cuda.device_array`."""
    desc = arr.__array_interface__ if sim else arr.__cuda_array_interface__
    return int(desc["data"][0])


def _view(
    cuda: Any, ptr: int, count: int, dtype: Any, owner: object, stream: Any, sim: bool
) -> Any:
    """A 1-D device array of ``count`` items of ``dtype`` at device address ``ptr``."""
    dtype = np.dtype(dtype)
    if sim:
        # Simulated device memory is host memory: read it through the pointer. (Kernels in the
        # simulator get a copy; nothing here writes to it.)
        raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
        return cuda.to_device(np.frombuffer(raw, dtype=dtype))
    desc: dict[str, Any] = {
        "shape": (count,),
        "strides": None,
        "typestr": dtype.str,
        "data": (ptr, False),
        "version": 3,
        "stream": stream,
    }
    # Numba synchronises on the producer's stream (if it names one) before the view is used.
    return cuda.as_cuda_array(_Interface(desc, owner))


def digest(obj: object, *, allow_copy: bool, config: Any = None) -> bytes:
    """BLAKE3 of a device array's bytes in C order, computed on the device.

    Parameters
    ----------
    obj:
        A device array (see :func:`is_device_array`).
    allow_copy:
        Whether a non-contiguous array may be gathered into a C-ordered device copy first;
        if not, such an array raises :class:`HashingError`.
    config:
        A ``KernelConfig`` (thread-block shapes); ``None`` for the default.

    Returns
    -------
    bytes
        The 32-byte digest.

    Raises
    ------
    HashingError
        ``obj`` is not a device array, is masked, or (``allow_copy=False``) is not
        C-contiguous.
    ExecutorError
        Numba's CUDA target is missing, or there is neither a device nor the simulator.
    """
    _require_device_array(obj)
    cuda = cuda_module()
    sim = simulated()
    if sim:
        with _SIM_LOCK:
            return _digest(cuda, obj, allow_copy=allow_copy, config=config, sim=True)
    device_id = getattr(getattr(obj, "device", None), "id", None)
    if isinstance(device_id, int) and len(cuda.gpus) > 1:
        with cuda.gpus[device_id]:
            return _digest(cuda, obj, allow_copy=allow_copy, config=config, sim=False)
    return _digest(cuda, obj, allow_copy=allow_copy, config=config, sim=False)


@dataclass(frozen=True)
class Prepared:
    """The device views the kernels read (see :func:`prepare`).

    Attributes
    ----------
    words:
        1-D ``uint32`` view of the bytes (at least one element).
    data8:
        1-D ``uint8`` view of the bytes (at least one element).
    nbytes:
        The number of bytes to hash.
    """

    words: Any
    data8: Any
    nbytes: int


def prepare(cuda: Any, obj: object, *, allow_copy: bool, sim: bool) -> Prepared:
    """Views of a device array's bytes in C order, ready for the kernels.

    Parameters
    ----------
    cuda:
        The ``numba.cuda`` module (see :func:`digest`).
    obj:
        A device array.
    allow_copy:
        Whether a non-contiguous array may be gathered into a C-ordered device copy.
    sim:
        Whether the CUDA simulator is enabled.

    Returns
    -------
    Prepared
        Views that keep the memory they read alive.
    """
    desc = _describe(obj, sim)
    shape = tuple(int(n) for n in desc["shape"])
    raw_strides = desc.get("strides")
    strides = None if raw_strides is None else tuple(int(s) for s in raw_strides)
    itemsize = np.dtype(desc["typestr"]).itemsize
    nelem = math.prod(shape)
    nbytes = nelem * itemsize
    ptr = int(desc["data"][0])
    stream = desc.get("stream")
    owner: object = obj

    if nbytes == 0:
        words = cuda.device_array(1, dtype=np.uint32)
        return Prepared(words, cuda.device_array(1, dtype=np.uint8), 0)

    if strides is not None and not _is_c_contiguous(shape, strides, itemsize):
        if not allow_copy:
            raise HashingError(
                f"expected a C-contiguous device buffer, found a {_type_name(obj)} of shape "
                f"{shape} with strides {strides}; pass a contiguous copy (e.g. "
                f"cupy.ascontiguousarray(buf)), or use mlflowkit.gpu.device_data_digest, "
                f"which hashes any array's bytes in C order",
                type_name=_type_name(obj),
            )
        from mlflowkit.hashing.device import _blake3

        low = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides, strict=True))
        high = sum(max(0, (n - 1) * s) for n, s in zip(shape, strides, strict=True))
        span = _view(cuda, ptr + low, high - low + itemsize, np.uint8, owner, stream, sim)
        out = cuda.device_array(nbytes, dtype=np.uint8)
        _blake3.gather(
            span,
            -low,
            cuda.to_device(np.asarray(shape, dtype=np.int64)),
            cuda.to_device(np.asarray(strides, dtype=np.int64)),
            itemsize,
            nelem,
            out,
        )
        owner, ptr, stream = out, _pointer(out, sim), None
    elif ptr % 4:
        # 32-bit loads need 4-byte alignment: copy to a fresh allocation (aligned) first.
        out = cuda.device_array(nbytes, dtype=np.uint8)
        out.copy_to_device(_view(cuda, ptr, nbytes, np.uint8, owner, stream, sim))
        owner, ptr, stream = out, _pointer(out, sim), None

    data8 = _view(cuda, ptr, nbytes, np.uint8, owner, stream, sim)
    if nbytes >= 4:
        words = _view(cuda, ptr, nbytes // 4, np.uint32, owner, stream, sim)
    else:
        words = cuda.device_array(1, dtype=np.uint32)
    return Prepared(words, data8, nbytes)


def _digest(cuda: Any, obj: object, *, allow_copy: bool, config: Any, sim: bool) -> bytes:
    from mlflowkit.hashing.device._blake3 import DEFAULT_CONFIG, digest_device

    prepared = prepare(cuda, obj, allow_copy=allow_copy, sim=sim)
    cfg = DEFAULT_CONFIG if config is None else config
    return digest_device(prepared.words, prepared.data8, prepared.nbytes, cfg)
