"""Encodings of NumPy arrays, scalars and dtypes, and of ``__cuda_array_interface__`` arrays.

Loaded the first time a NumPy value is hashed (``import mlflowkit.hashing`` does not import
NumPy).

Invariants
----------
* An array is written as ``A | dtype | shape | data digest``, where the data digest is the
  32-byte BLAKE3 of the array's bytes in C order. The dtype is canonical and little-endian
  (structured fields, offsets, datetime units and string lengths included), and the data is
  little-endian: a big-endian array equals the equal little-endian one.
* C-contiguous data is hashed in place, without a copy. Other layouts (Fortran order, strided
  views) are copied in blocks of a few MiB, so the digest of the same logical content is the
  same in every layout.
* Array data is hashed bitwise: NaN payloads and signed zeros count as stored. (Scalar floats,
  NumPy's included, canonicalize NaN; see ``mlflowkit.hashing.values``.)
* Arrays holding Python objects (``object`` dtype, structured dtypes with object fields,
  ``StringDType``) are hashed element by element through ``hash_value``, never by pointer.
* ``np.memmap`` and other ndarray subclasses hash as the array they view; masked arrays hash
  their data, mask and fill value.
* A device array (CuPy, Numba, anything with ``__cuda_array_interface__``, and Numba's
  simulated device arrays) is written exactly like the equal NumPy array; only its data digest
  is computed on the device, by ``mlflowkit.hashing.device.device_data_digest`` (public as
  ``mlflowkit.gpu.device_data_digest``), or a function set with ``set_device_data_digest``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import blake3
import numpy as np

from mlflowkit.errors import HashingError, MlflowkitError
from mlflowkit.hashing import values as _v
from mlflowkit.hashing._leaves import pack_u64

__all__ = [
    "array_data_digest",
    "dtype_encoding",
    "encode_device_array",
    "register",
    "register_masked",
    "set_device_data_digest",
]

_CHUNK = 8 << 20
_DTYPES: dict[np.dtype[Any], bytes] = {}
_DTYPES_LOCK = threading.Lock()
_DEVICE_DIGEST: Callable[[Any], bytes] | None = None
_BIG_ENDIAN = sys.byteorder == "big"


def _little(dt: np.dtype[Any]) -> np.dtype[Any]:
    try:
        little = dt.newbyteorder("<")
    except TypeError:  # new-style dtypes without a byte order
        return dt
    return dt if little == dt else little


def _canon(dt: np.dtype[Any]) -> Any:
    if dt.fields is not None and dt.names is not None:
        fields = []
        for name in dt.names:
            field = dt.fields[name]
            title = field[2] if len(field) > 2 else None
            fields.append((name, _canon(field[0]), field[1], title))
        return ("struct", dt.itemsize, tuple(fields))
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return ("subarray", _canon(base), tuple(shape))
    try:
        return dt.newbyteorder("<").str
    except TypeError:  # new-style dtypes without a byte order (StringDType, ...)
        return ("dtype", _v.type_name(type(dt)), str(dt))


def dtype_encoding(dt: np.dtype[Any]) -> bytes:
    """The canonical, little-endian encoding of a dtype (cached).

    Parameters
    ----------
    dt:
        Any NumPy dtype; ``=f8``, ``<f8`` and ``>f8`` give the same encoding.
    """
    enc = _DTYPES.get(dt)
    if enc is None:
        enc = _v.encode(_canon(dt))
        with _DTYPES_LOCK:
            if len(_DTYPES) > 4096:
                _DTYPES.clear()
            _DTYPES[dt] = enc
    return enc


def _shape(shape: tuple[int, ...]) -> bytes:
    return pack_u64(len(shape)) + b"".join(pack_u64(n) for n in shape)


def array_data_digest(a: np.ndarray[Any, Any]) -> bytes:
    """BLAKE3-256 (32 bytes) of an array's bytes in C order, without copying contiguous data.

    Parameters
    ----------
    a:
        An array without Python objects; its dtype's own byte order is hashed as stored.
    """
    nbytes = a.nbytes
    h = blake3.blake3(max_threads=blake3.blake3.AUTO) if nbytes > _v.BIG_BUFFER else blake3.blake3()
    if nbytes == 0:
        return h.digest()
    if a.flags.c_contiguous:
        h.update(a.reshape(-1).view(np.uint8).data)
        return h.digest()
    rows = a.shape[0]
    step = max(1, _CHUNK // max(1, nbytes // rows))
    for start in range(0, rows, step):
        block = np.ascontiguousarray(a[start : start + step])
        h.update(block.reshape(-1).view(np.uint8).data)
    return h.digest()


def encode_ndarray(st: _v.EncodeState, a: np.ndarray[Any, Any]) -> None:
    """Encoder for ``numpy.ndarray`` and its subclasses (hashed as the array they view)."""
    if type(a) is not np.ndarray:
        a = a.view(np.ndarray)
    dt = a.dtype
    if dt.hasobject:
        st.enter(a)
        st.out += b"o" + dtype_encoding(dt) + _shape(a.shape)
        st.stack.append(st.exit_marker(a))
        st.stack.extend(reversed(np.asarray(a).ravel().tolist()))
        return
    little = _little(dt)
    if little is not dt:
        a = a.astype(little)
    st.out += b"A" + dtype_encoding(little) + _shape(a.shape) + array_data_digest(a)


def _scalar_bytes(x: np.generic) -> bytes:
    kind = x.dtype.kind
    if kind in "fc" and bool(x != x):  # NaN somewhere: canonical NaN parts  # noqa: PLR0124
        a = np.asarray(x).astype(_little(x.dtype))
        half = f"<f{a.dtype.itemsize // 2}" if kind == "c" else a.dtype
        parts: np.ndarray[Any, Any] = a.reshape(1).view(half).copy()
        parts[np.isnan(parts)] = np.nan
        return parts.tobytes()
    if _BIG_ENDIAN:  # scalars are native; write them little-endian
        return np.asarray(x).astype(_little(x.dtype)).tobytes()
    return x.tobytes()


def encode_scalar(st: _v.EncodeState, x: np.generic) -> None:
    """Encoder for NumPy scalars: ``n | dtype | bytes`` (NaN canonical)."""
    dt = x.dtype
    if dt.hasobject:
        st.out += b"v" + dtype_encoding(dt)
        st.stack.append(x.item())
        return
    data = _scalar_bytes(x)
    st.out += b"n" + dtype_encoding(dt) + pack_u64(len(data)) + data


def encode_dtype(st: _v.EncodeState, dt: np.dtype[Any]) -> None:
    """Encoder for dtypes: ``# | canonical dtype``."""
    st.out += b"#" + dtype_encoding(dt)


def _ufunc(f: np.ufunc) -> tuple[str, str]:
    return ("numpy", f.__name__)


def register() -> None:
    """Register the NumPy encoders (run lazily by the first NumPy value seen)."""
    _v.register_encoder(np.ndarray, encode_ndarray)
    _v.register_encoder(np.generic, encode_scalar)
    _v.register_encoder(np.dtype, encode_dtype)
    _v.register_reducer(np.ufunc, _ufunc, name="numpy.ufunc")


def _masked(x: Any) -> tuple[Any, Any, Any]:
    return (np.asarray(x.data), np.ma.getmaskarray(x), x.fill_value)


def register_masked() -> None:
    """Register masked arrays: their data, mask and fill value."""
    register()
    _v.register_reducer(np.ma.MaskedArray, _masked, name="numpy.ma.MaskedArray")


# --------------------------------------------------------------------------------------------
# device arrays


def set_device_data_digest(fn: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """Set the function computing a device array's data digest; returns the previous one.

    By default (``None``) mlflowkit calls ``mlflowkit.gpu.device_data_digest(obj)`` (it lives
    in ``mlflowkit.hashing.device``). The function must return the 32-byte BLAKE3 of the
    array's bytes in C order, equal to ``array_data_digest`` of the same data on the host.
    """
    global _DEVICE_DIGEST
    previous = _DEVICE_DIGEST
    _DEVICE_DIGEST = fn
    return previous


def _device_digest(obj: Any) -> bytes:
    fn = _DEVICE_DIGEST
    if fn is None:
        try:
            from mlflowkit.hashing.device import device_data_digest
        except ImportError as exc:
            raise HashingError(
                f"cannot hash the device array {_v.type_name(type(obj))}: expected "
                "mlflowkit.gpu.device_data_digest to digest it on the device, found "
                f"{type(exc).__name__}: {exc}. Install the GPU extra: "
                "pip install 'mlflowkit[gpu]'",
                type_name=_v.type_name(type(obj)),
            ) from exc
        fn = device_data_digest
    digest = fn(obj)
    if not isinstance(digest, bytes) or len(digest) != 32:
        size = len(digest) if isinstance(digest, (bytes, bytearray, str)) else "?"
        raise HashingError(
            f"the device digest of a {_v.type_name(type(obj))} must be 32 bytes, found "
            f"{type(digest).__name__} of length {size}",
            type_name=_v.type_name(type(obj)),
        )
    return digest


def _device_layout(obj: Any) -> tuple[np.dtype[Any], tuple[int, ...]]:
    cai = getattr(type(obj), "__cuda_array_interface__", None) and obj.__cuda_array_interface__
    if cai:
        typestr = cai["typestr"]
        descr = cai.get("descr")
        dt = np.dtype(descr) if descr and typestr.startswith("|V") else np.dtype(typestr)
        return dt, tuple(int(n) for n in cai["shape"])
    return np.dtype(obj.dtype), tuple(int(n) for n in obj.shape)  # simulator arrays


def encode_device_array(st: _v.EncodeState, obj: Any) -> None:
    """Encoder for device arrays: the same encoding as the equal NumPy array.

    Device arrays are objects exporting ``__cuda_array_interface__``, and Numba's simulated
    device arrays (``__cuda_ndarray__ = True``).
    """
    name = _v.type_name(type(obj))
    try:
        dt, shape = _device_layout(obj)
    except MlflowkitError:
        raise
    except Exception as exc:
        raise HashingError(
            f"cannot read the dtype and shape of the device array {name}: "
            f"{type(exc).__name__}: {exc}",
            type_name=name,
        ) from exc
    if dt.hasobject or _little(dt) is not dt:
        raise HashingError(
            f"cannot hash a {name} of dtype {dt}: expected a little-endian dtype without "
            "Python objects on the device",
            type_name=name,
        )
    st.out += b"A" + dtype_encoding(dt) + _shape(shape) + _device_digest(obj)
