"""Leaf encodings: scalars (numbers, strings, bytes, dates, paths, ...) written as tagged bytes.

Part of the canonical encoding specified in ``mlflowkit.hashing.values``: each function maps one
value to its whole encoding (a one-byte tag, then a fixed-size or length-prefixed payload), with
no children to walk. ``LEAF_ENCODERS`` maps each exact type to its encoder.
"""

from __future__ import annotations

import datetime as _dt
import pathlib
import struct
import sys
from collections.abc import Callable
from typing import Any

import blake3

__all__ = [
    "BIG_BUFFER",
    "LEAF_ENCODERS",
    "adopt_stdlib_leaves",
    "digest_bytes",
    "encode_path",
    "encode_str",
    "hash_bytes",
    "pack_i64",
    "pack_u64",
    "small_digest",
    "type_name",
]

#: Buffers larger than this are hashed with BLAKE3's multi-threaded mode, and ``bytes`` values
#: at least this long are written as ``length | digest`` instead of inline.
BIG_BUFFER = 1 << 20
_INLINE_LIMIT = 1 << 16

pack_u64 = struct.Struct("<Q").pack
pack_i64 = struct.Struct("<q").pack
_d = struct.Struct("<d").pack
_NAN = pack_u64(0x7FF8000000000000)
_DATE = struct.Struct("<HBB").pack
_DATETIME = struct.Struct("<HBBBBBIB").pack
_TIME = struct.Struct("<BBBIB").pack
_TIMEDELTA = struct.Struct("<qqq").pack
_blake3 = blake3.blake3
_AUTO = blake3.blake3.AUTO


# --------------------------------------------------------------------------------------------
# digests of raw bytes

#: Hashers not in use, reused by ``small_digest``. A thread takes one with ``pop`` and puts it
#: back with ``append`` (both atomic), so no two threads ever share one; a hasher whose thread
#: failed mid-use is simply not put back.
_SPARE: list[Any] = []


def small_digest(data: bytes) -> bytes:
    """BLAKE3-256 (32 bytes) of a small ``bytes`` object, with a reused hasher.

    The same digest as ``blake3.blake3(data).digest()``; making a new hasher costs more than
    hashing a short input (a hasher is ~2 KB of state), so a step call's few small digests
    reuse spare ones. Large buffers go through ``digest_bytes`` (multi-threaded).
    """
    try:
        hasher = _SPARE.pop()
    except IndexError:
        hasher = _blake3()
    hasher.update(data)
    digest: bytes = hasher.digest()
    hasher.reset()
    _SPARE.append(hasher)
    return digest


def digest_bytes(data: Any) -> bytes:
    """BLAKE3-256 (32 bytes) of a bytes-like object, multi-threaded when it is large."""
    if isinstance(data, memoryview) and data.format != "B":
        data = data.cast("B") if data.c_contiguous else data.tobytes()
    if len(data) > BIG_BUFFER:
        return _blake3(data, max_threads=_AUTO).digest()
    return _blake3(data).digest()


def hash_bytes(data: Any) -> str:
    """Plain (untagged) BLAKE3-256 hex digest of ``bytes``, ``bytearray`` or ``memoryview``:
    ``blake3.blake3(data).hexdigest()``, multi-threaded when the data is large."""
    return digest_bytes(data).hex()


# --------------------------------------------------------------------------------------------
# leaf encoders: obj -> bytes, no children


def _enc_int(x: int) -> bytes:
    try:
        return b"i" + pack_i64(x)
    except struct.error:
        n = (x.bit_length() + 8) // 8
        return b"I" + pack_u64(n) + int.to_bytes(x, n, "little", signed=True)


def _fbits(x: float) -> bytes:
    return _NAN if x != x else _d(x)  # noqa: PLR0124 - the NaN test without a call


def _enc_float(x: float) -> bytes:
    return b"f" + (_NAN if x != x else _d(x))  # noqa: PLR0124 - NaN test, no call


def _enc_complex(x: complex) -> bytes:
    return b"c" + _fbits(x.real) + _fbits(x.imag)


def _utf8(x: str) -> bytes:
    try:
        return x.encode()
    except UnicodeEncodeError:  # lone surrogates: an injective, non-UTF-8 byte form
        return x.encode("utf-8", "surrogatepass")


def encode_str(x: str) -> bytes:
    data = _utf8(x)
    return b"s" + pack_u64(len(data)) + data


def _enc_bytes(x: bytes) -> bytes:
    if len(x) < _INLINE_LIMIT:
        return b"b" + pack_u64(len(x)) + x
    return b"B" + pack_u64(len(x)) + digest_bytes(x)


def _enc_bytearray(x: bytearray) -> bytes:
    if len(x) < _INLINE_LIMIT:
        return b"y" + pack_u64(len(x)) + bytes(x)
    return b"Y" + pack_u64(len(x)) + digest_bytes(x)


def _enc_memoryview(x: memoryview) -> bytes:
    shape = x.shape or ()
    return (
        b"m"
        + encode_str(x.format)
        + pack_u64(x.itemsize)
        + pack_u64(len(shape))
        + b"".join(pack_u64(n) for n in shape)
        + digest_bytes(x)
    )


def _enc_decimal(x: Any) -> bytes:  # decimal.Decimal
    sign, digits, exponent = x.as_tuple()
    exp = _enc_int(exponent) if isinstance(exponent, int) else encode_str(exponent)
    return b"D" + bytes([sign]) + encode_str("".join(map(str, digits))) + exp


def _enc_timedelta_payload(x: _dt.timedelta | None) -> bytes:
    if x is None:
        return b"N"
    return b"e" + _TIMEDELTA(x.days, x.seconds, x.microseconds)


def _enc_tz(tz: _dt.tzinfo | None, at: _dt.datetime | None) -> bytes:
    if tz is None:
        return b"N"
    if type(tz) is _dt.timezone:
        return b"z" + _enc_timedelta_payload(tz.utcoffset(None)) + encode_str(tz.tzname(None))
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo / pytz names
    name = encode_str(type_name(type(tz)))
    if isinstance(key, str) and at is None:
        return b"Z" + name + encode_str(key)
    offset = _enc_timedelta_payload(tz.utcoffset(at))
    label = tz.tzname(at)
    return (
        b"x"
        + name
        + (encode_str(key) if isinstance(key, str) else b"N")
        + offset
        + (encode_str(label) if label is not None else b"N")
    )


def _tz_of_datetime(x: _dt.datetime) -> bytes:
    tz = x.tzinfo
    if tz is not None and isinstance(getattr(tz, "key", None), str):
        return _enc_tz(tz, None)  # zoneinfo: the zone's name, not the tz database's offsets
    return _enc_tz(tz, x)


def _enc_datetime(x: _dt.datetime) -> bytes:
    fields = (x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond, x.fold)
    return b"W" + _DATETIME(*fields) + _tz_of_datetime(x)


def _enc_date(x: _dt.date) -> bytes:
    return b"d" + _DATE(x.year, x.month, x.day)


def _enc_time(x: _dt.time) -> bytes:
    fields = (x.hour, x.minute, x.second, x.microsecond, x.fold)
    return b"t" + _TIME(*fields) + _enc_tz(x.tzinfo, None)


def encode_path(x: pathlib.PurePath) -> bytes:
    flavour = b"W" if isinstance(x, pathlib.PureWindowsPath) else b"P"
    return b"p" + flavour + encode_str(str(x))


LEAF_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda _: b"N",
    bool: lambda x: b"T" if x else b"F",
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: encode_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    memoryview: _enc_memoryview,
    type(Ellipsis): lambda _: b".",
    _dt.datetime: _enc_datetime,
    _dt.date: _enc_date,
    _dt.time: _enc_time,
    _dt.timedelta: _enc_timedelta_payload,
    pathlib.PurePosixPath: encode_path,
    pathlib.PureWindowsPath: encode_path,
    pathlib.PosixPath: encode_path,
    pathlib.WindowsPath: encode_path,
    range: lambda x: b"r" + _enc_int(x.start) + _enc_int(x.stop) + _enc_int(x.step),
    type: lambda x: b"C" + encode_str(type_name(x)),
}

#: Leaf types of standard-library modules that hashing does not import itself, keyed by module
#: and class name (``decimal`` and ``fractions`` cost ~1.5 ms and nothing else of mlflowkit
#: loads them; ``uuid`` comes with orjson, and is here so that one rule covers all three). A
#: value of one of them means its module is loaded: ``adopt_stdlib_leaves`` adds their encoders
#: to ``LEAF_ENCODERS`` the first time such a type (or a subclass) is seen.
_STDLIB_LEAVES: dict[tuple[str, str], Callable[[Any], bytes]] = {
    ("decimal", "Decimal"): _enc_decimal,
    ("fractions", "Fraction"): lambda x: b"Q" + _enc_int(x.numerator) + _enc_int(x.denominator),
    ("uuid", "UUID"): lambda x: b"u" + x.bytes,
}


def adopt_stdlib_leaves(t: type) -> Callable[[Any], bytes] | None:
    """Add the encoders of the lazily known standard-library leaf types in ``t``'s MRO, and
    return ``t``'s own leaf encoder (None: ``t`` is not a leaf type; a subclass of one is not).
    """
    for base in t.__mro__:
        key = (str(getattr(base, "__module__", "")), base.__name__)
        enc = _STDLIB_LEAVES.get(key)
        if enc is not None and getattr(sys.modules.get(key[0]), key[1], None) is base:
            LEAF_ENCODERS[base] = enc
    return LEAF_ENCODERS.get(t)


_TYPE_NAMES: dict[type, str] = {}


def type_name(t: type) -> str:
    """The qualified name ``module.qualname`` of a type (``builtins.int``, ``pkg.mod.Cls``)."""
    name = _TYPE_NAMES.get(t)
    if name is None:
        module = getattr(t, "__module__", None) or "?"
        name = f"{module}.{getattr(t, '__qualname__', t.__name__)}"
        if len(_TYPE_NAMES) > 10_000:
            _TYPE_NAMES.clear()
        _TYPE_NAMES[t] = name
    return name
