"""Serializers: how a value becomes the payload bytes of a stored object, and back.

A serializer is a named pair of functions ``dump(value) -> bytes`` and ``load(bytes) -> value``
with a ``match`` test saying which values it is fit for. The store writes the serializer's name
into every object's header, so an object is always read back with the serializer that wrote it.

Built-in serializers, tried in this order after the user-registered ones:

=============  =============================================================================
name           values
=============  =============================================================================
``npy``        ``numpy.ndarray`` (and views such as ``numpy.memmap``) without Python objects,
               as a ``.npy`` file written with ``allow_pickle=False``
``parquet``    ``pandas.DataFrame`` / ``pandas.Series`` via pyarrow, index and names kept; a
               frame that Parquet cannot represent exactly falls through to ``pickle``
``arrow-ipc``  ``pyarrow.Table`` in the Arrow IPC file format (exact schema round-trip)
``json``       ``None``/``bool``/``int``/``float``/``str`` and ``list``/``dict`` (str keys) of
               those, only when the value reads back equal *and of identical types*
``tree``       ``tuple``/``list``/``dict`` holding arrays, frames, tables, NumPy scalars,
               any ``bytes``/``complex``/``float`` and any keys of those kinds (e.g. the
               ``(X, y)`` a step returns): a JSON manifest of the structure plus one member
               per array (``.npy``), frame (Parquet) or table (Arrow IPC); never pickle
``pickle``     anything cloudpickle can write: the last resort
=============  =============================================================================

Plugins register their own with :func:`register_serializer`; user serializers are tried before
the built-ins, the most recently registered first::

    register_serializer("torch", torch.Tensor, dump=my_dump, load=my_load)

Invariants:

* ``loads(name, dumps(value, ...)[1])`` gives back a value equal to ``value`` with identical
  types; a serializer that cannot promise that for a value declines it (``match`` is False, or
  it raises :class:`_Decline` from ``dump``) and the next one is tried.
* pandas and pyarrow are imported only when a value of theirs is seen (matching goes by the
  qualified names of the value's classes), so importing this module stays light.
* Every failure is a :class:`~mlflowkit.errors.SerializationError` naming the type, the
  serializer, and how to fix it.
* Pickle is used only for what no other serializer can hold exactly; a ``tree`` payload
  never holds a pickled member (one that names pickle is refused on read).
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflowkit.errors import SerializationError

__all__ = [
    "Serializer",
    "dumps",
    "get_serializer",
    "loads",
    "register_serializer",
    "serializer_for",
    "serializer_names",
    "unregister_serializer",
]

Match = type | tuple[type, ...] | Callable[[Any], bool]

_JSON_SCALARS = (type(None), bool, int, str)
_JSON_MAX_DEPTH = 100
_JSON_MAX_INT_BITS = 10_000  # Python refuses int <-> str conversions of more than 4300 digits


class _Decline(Exception):
    """Raised by a built-in ``dump`` that cannot represent this value exactly."""


@dataclass(frozen=True)
class Serializer:
    """A named way to turn values into bytes and back.

    Parameters
    ----------
    name:
        Written into each object's header; must be unique, ASCII, at most 64 characters.
    match:
        A type, a tuple of types (``isinstance`` test) or a predicate ``value -> bool``.
    dump:
        ``value -> bytes`` (any bytes-like object).
    load:
        ``bytes -> value``; must give back a value equal to the one dumped.
    """

    name: str
    match: Match
    dump: Callable[[Any], bytes | bytearray | memoryview]
    load: Callable[[bytes], Any]

    def matches(self, value: Any) -> bool:
        """Whether this serializer is fit for ``value``."""
        match = self.match
        if isinstance(match, (type, tuple)):
            return isinstance(value, match)
        return bool(match(value))


_lock = threading.Lock()
_user: list[Serializer] = []  # most recently registered first
_builtin: list[Serializer] = []
_by_name: dict[str, Serializer] = {}


def register_serializer(
    name: str,
    match: Match,
    dump: Callable[[Any], bytes | bytearray | memoryview],
    load: Callable[[bytes], Any],
    *,
    replace: bool = False,
) -> Serializer:
    """Register a serializer for values that ``match``; it is tried before the built-ins.

    Parameters
    ----------
    name:
        Unique name written into each object's header (ASCII, 1 to 64 characters). Also the
        value a step's ``serializer=`` option takes to force it.
    match:
        A type, a tuple of types, or a predicate ``value -> bool``.
    dump, load:
        ``value -> bytes`` and ``bytes -> value``. ``load(dump(v))`` must equal ``v``.
    replace:
        Allow replacing an existing user serializer of the same name.

    Returns
    -------
    Serializer
        The registered serializer.

    Raises
    ------
    SerializationError
        The name is invalid, or already taken (by a built-in, or without ``replace=True``).

    Notes
    -----
    A process that reads objects written with a plugin serializer must register it too
    (e.g. on import of the plugin); otherwise reading fails with a message naming it.
    """
    if not (1 <= len(name) <= 64 and name.isascii() and name.isprintable()):
        raise SerializationError(
            f"serializer name {name!r} is invalid: expected 1 to 64 printable ASCII characters"
        )
    ser = Serializer(name=name, match=match, dump=dump, load=load)
    with _lock:
        _ensure_builtins()
        old = _by_name.get(name)
        if old is not None and (old in _builtin or not replace):
            raise SerializationError(
                f"a serializer named {name!r} is already registered; pick another name, or "
                "pass replace=True to replace a serializer you registered yourself"
            )
        if old is not None:
            _user.remove(old)
        _user.insert(0, ser)
        _by_name[name] = ser
    return ser


def unregister_serializer(name: str) -> None:
    """Remove a serializer registered with :func:`register_serializer` (built-ins stay)."""
    with _lock:
        ser = _by_name.get(name)
        if ser is None or ser not in _user:
            raise SerializationError(f"no user serializer named {name!r} is registered")
        _user.remove(ser)
        del _by_name[name]


def serializer_names() -> list[str]:
    """Names of all serializers, in the order they are tried."""
    _ensure_builtins()
    return [s.name for s in (*_user, *_builtin)]


def get_serializer(name: str) -> Serializer:
    """The serializer registered under ``name``.

    Raises
    ------
    SerializationError
        No serializer has that name in this process.
    """
    _ensure_builtins()
    try:
        return _by_name[name]
    except KeyError:
        raise SerializationError(
            f"no serializer named {name!r}; known: {', '.join(serializer_names())}. "
            "Register it with mlflowkit.store.register_serializer(name, type, dump, load) in "
            "every process that writes or reads such objects."
        ) from None


def serializer_for(value: Any) -> Serializer:
    """The first serializer fit for ``value`` (user-registered ones first, pickle last)."""
    _ensure_builtins()
    for ser in _user:
        if ser.matches(value):
            return ser
    for ser in _builtin:
        if ser.matches(value):
            return ser
    return _by_name["pickle"]  # pragma: no cover - pickle matches everything


def dumps(value: Any, serializer: str | None = None) -> tuple[str, bytes | bytearray | memoryview]:
    """Serialize ``value``; return the serializer's name and the payload.

    Parameters
    ----------
    value:
        Any value.
    serializer:
        Force this serializer (by name) instead of choosing by type.

    Raises
    ------
    SerializationError
        The (chosen or forced) serializer failed; the message names the type and the fix.
    """
    if serializer is not None:
        ser = get_serializer(serializer)
        if not ser.matches(value):
            raise SerializationError(
                f"serializer {ser.name!r} (forced with serializer=) is not fit for a value of "
                f"type {_qualname(type(value))}: it would not read back identical. Remove the "
                "serializer= option, or register a serializer for this type with "
                "mlflowkit.store.register_serializer(name, Type, dump, load)."
            )
        try:
            return ser.name, ser.dump(value)
        except _Decline as exc:
            raise _dump_error(value, ser.name, exc) from exc
        except SerializationError:
            raise
        except Exception as exc:
            raise _dump_error(value, ser.name, exc) from exc
    tp = type(value)
    if (  # fast path for the most common small values
        not _user
        and (tp in _JSON_SCALARS or tp is float)
        and (tp is not float or math.isfinite(value))
        and (tp is not int or value.bit_length() <= _JSON_MAX_INT_BITS)
    ):
        return "json", json.dumps(value).encode("ascii")
    _ensure_builtins()
    for ser in (*_user, *_builtin):
        try:
            if not ser.matches(value):
                continue
            return ser.name, ser.dump(value)
        except _Decline:
            continue
        except SerializationError:
            raise
        except Exception as exc:
            raise _dump_error(value, ser.name, exc) from exc
    raise _dump_error(value, "pickle", None)  # pragma: no cover - pickle matches everything


def loads(name: str, payload: bytes) -> Any:
    """Deserialize a payload written by the serializer called ``name``.

    Raises
    ------
    SerializationError
        The serializer is unknown here or failed to read the payload.
    """
    ser = get_serializer(name)
    try:
        return ser.load(payload)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"serializer {name!r} could not read a stored payload of {len(payload)} bytes: "
            f"{type(exc).__name__}: {exc}. If the serializer's code changed since the object "
            "was written, load it with the old version or delete the object (store.gc)."
        ) from exc


def _dump_error(value: Any, name: str, exc: BaseException | None) -> SerializationError:
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return SerializationError(
        f"cannot serialize a value of type {_qualname(type(value))} with serializer "
        f"{name!r}{detail}. Register a serializer for this type with "
        "mlflowkit.store.register_serializer(name, Type, dump, load), or choose another "
        "with the step's serializer= option."
    )


def _qualname(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


_mro_cache: dict[type, frozenset[str]] = {}


def _mro_names(tp: type) -> frozenset[str]:
    """``"package.ClassName"`` of each class in the MRO (top-level package only, as classes
    are often re-exported: ``pandas.DataFrame`` lives in ``pandas.core.frame``)."""
    names = _mro_cache.get(tp)
    if names is None:
        names = frozenset(f"{c.__module__.split('.', 1)[0]}.{c.__name__}" for c in tp.__mro__)
        if len(_mro_cache) < 4096:
            _mro_cache[tp] = names
    return names


def _is_instance_by_name(value: Any, *names: str) -> bool:
    """``isinstance`` by ``"package.ClassName"``, so the package need not be imported."""
    mro = _mro_names(type(value))
    return any(n in mro for n in names)


# --- json --------------------------------------------------------------------------------------


def _json_exact(value: Any, depth: int = 0) -> bool:
    """Whether ``json.loads(json.dumps(value))`` gives back ``value`` with identical types."""
    tp = type(value)
    if tp is str or tp is bool or value is None:
        return True
    if tp is int:
        return bool(value.bit_length() <= _JSON_MAX_INT_BITS)
    if tp is float:
        return math.isfinite(value)
    if depth >= _JSON_MAX_DEPTH:
        return False
    if tp is list:
        return all(_json_exact(v, depth + 1) for v in value)
    if tp is dict:
        return all(type(k) is str and _json_exact(v, depth + 1) for k, v in value.items())
    return False


def _json_dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
        "ascii"
    )


def _json_load(payload: bytes) -> Any:
    return json.loads(payload)


# --- numpy -------------------------------------------------------------------------------------


def _is_plain_ndarray(value: Any) -> bool:
    if not _is_instance_by_name(value, "numpy.ndarray"):
        return False
    import numpy as np

    # subclasses other than memmap (masked arrays, matrices, ...) would not come back as such
    if type(value) is not np.ndarray and not isinstance(value, np.memmap):
        return False
    return not value.dtype.hasobject


def _npy_dump(value: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


def _npy_load(payload: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(payload), allow_pickle=False)


# --- pandas (parquet) --------------------------------------------------------------------------

_PD_FRAME_QN = "pandas.DataFrame"
_PD_SERIES_QN = "pandas.Series"
_SERIES_COLUMN = "__series__"
_META_KEY = b"mlflowkit"


def _is_pandas(value: Any) -> bool:
    return _is_instance_by_name(value, _PD_FRAME_QN, _PD_SERIES_QN)


def _parquet_dump(value: Any) -> bytes:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    series = isinstance(value, pd.Series)
    if series:
        if value.name is not None and not isinstance(value.name, str):
            raise _Decline("a Series name that is not a str does not survive Parquet")
        frame = value.to_frame(name=_SERIES_COLUMN)
        meta = {"kind": "series", "name": value.name}
    else:
        frame = value
        meta = {"kind": "frame"}
    try:
        table = pa.Table.from_pandas(frame)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _Decline(str(exc)) from exc
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    buf = io.BytesIO()
    try:
        pq.write_table(table, buf)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _Decline(str(exc)) from exc
    payload = buf.getvalue()
    # Parquet silently changes some frames (object columns, nested cells, frequencies): keep it
    # only when the frame reads back identical, dtypes included.
    try:
        back = _parquet_load(payload)
    except Exception as exc:
        raise _Decline(str(exc)) from exc
    if not _pandas_identical(value, back):
        raise _Decline("the value does not read back identical from Parquet")
    return payload


def _pandas_identical(a: Any, b: Any) -> bool:
    import pandas as pd

    if type(a) is not type(b):
        return False
    try:
        if isinstance(a, pd.Series):
            if a.dtype != b.dtype or a.name != b.name:
                return False
            pd.testing.assert_series_equal(
                a, b, check_exact=True, check_index_type=True, check_freq=True, check_flags=True
            )
        else:
            if list(a.dtypes) != list(b.dtypes) or a.columns.dtype != b.columns.dtype:
                return False
            pd.testing.assert_frame_equal(
                a,
                b,
                check_exact=True,
                check_index_type=True,
                check_column_type=True,
                check_names=True,
                check_freq=True,
                check_flags=True,
            )
        if a.index.dtype != b.index.dtype or a.attrs != b.attrs:
            return False
    except (AssertionError, TypeError, ValueError):
        return False
    return True


def _parquet_load(payload: bytes) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(payload))
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b'{"kind": "frame"}'))
    frame = table.to_pandas()
    if meta.get("kind") == "series":
        out = frame[_SERIES_COLUMN]
        out.name = meta.get("name")
        return out
    return frame


# --- pyarrow (IPC) -----------------------------------------------------------------------------


def _is_arrow_table(value: Any) -> bool:
    return _is_instance_by_name(value, "pyarrow.Table")


def _ipc_dump(value: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, value.schema) as writer:
        writer.write_table(value)
    return bytes(sink.getvalue().to_pybytes())


def _ipc_load(payload: bytes) -> Any:
    import pyarrow as pa

    with pa.ipc.open_file(pa.BufferReader(payload)) as reader:
        return reader.read_all()


# --- tree: tuples, lists and dicts of arrays and other values, without pickle -------------------

_TREE_MAGIC = b"MKTR\x01"
_TREE_LEN = struct.Struct("<I")
_TREE_TYPES = (tuple, list, dict)
_TREE_REFUSED = frozenset({"pickle", "json", "tree"})  # never as a member


def _is_tree(value: Any) -> bool:
    return type(value) in _TREE_TYPES


class _TreeWriter:
    """Turns a value into a manifest node, collecting the members' payloads."""

    def __init__(self) -> None:
        self.members: list[tuple[str, bytes]] = []

    def member(self, name: str, payload: bytes | bytearray | memoryview) -> int:
        self.members.append((name, bytes(payload)))
        return len(self.members) - 1

    def node(self, value: Any, depth: int) -> list[Any]:
        tp = type(value)
        if value is None:
            return ["n"]
        if tp is bool:
            return ["b", value]
        if tp is str:
            return ["s", value]
        if tp is int:
            if value.bit_length() > _JSON_MAX_INT_BITS:
                raise _Decline("an int too large for a JSON manifest")
            return ["i", value]
        if tp is float:
            return ["f", repr(value)]  # float(repr(x)) is x, NaN, infinities and -0.0 included
        if tp is complex:
            return ["c", repr(value.real), repr(value.imag)]
        if tp is bytes:
            return ["y", base64.b64encode(value).decode("ascii")]
        if depth >= _JSON_MAX_DEPTH:
            raise _Decline("nested too deep (or holds itself)")
        if tp is tuple or tp is list:
            return ["t" if tp is tuple else "l", [self.node(v, depth + 1) for v in value]]
        if tp is dict:
            return [
                "d",
                [[self.node(k, depth + 1), self.node(v, depth + 1)] for k, v in value.items()],
            ]
        if _is_instance_by_name(value, "numpy.ndarray"):
            if not _is_plain_ndarray(value):  # a memmap is kept as the array it views (as npy)
                raise _Decline("an array subclass or an array of Python objects")
            return ["a", self.member("npy", _npy_dump(value))]
        if _is_instance_by_name(value, "numpy.generic") and not _is_instance_by_name(
            value, "numpy.void"
        ):  # a NumPy scalar: a 0-d array member, read back with [()]
            import numpy as np

            return ["g", self.member("npy", _npy_dump(np.asarray(value)))]
        ser = serializer_for(value)
        if ser.name in _TREE_REFUSED:
            raise _Decline(f"a {_qualname(tp)} only pickle can hold")
        return ["m", self.member(ser.name, ser.dump(value))]


def _tree_dump(value: Any) -> bytes:
    writer = _TreeWriter()
    root = writer.node(value, 0)
    manifest = json.dumps(
        {"root": root, "members": [[name, len(data)] for name, data in writer.members]},
        ensure_ascii=True,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("ascii")
    return b"".join(
        (_TREE_MAGIC, _TREE_LEN.pack(len(manifest)), manifest, *(d for _, d in writer.members))
    )


def _tree_load(payload: bytes) -> Any:
    head = len(_TREE_MAGIC) + _TREE_LEN.size
    if payload[: len(_TREE_MAGIC)] != _TREE_MAGIC:
        raise ValueError("not a tree payload (bad magic bytes)")
    (size,) = _TREE_LEN.unpack_from(payload, len(_TREE_MAGIC))
    manifest = json.loads(payload[head : head + size])
    view = memoryview(payload)
    offset = head + size
    members: list[Any] = []
    for name, length in manifest["members"]:
        if name in _TREE_REFUSED:
            raise ValueError(f"a tree member may not be written with {name!r}")
        data = bytes(view[offset : offset + length])
        offset += length
        members.append(_npy_load(data) if name == "npy" else get_serializer(name).load(data))
    if offset != len(payload):
        raise ValueError("the members do not add up to the payload")

    def build(node: list[Any]) -> Any:
        tag = node[0]
        if tag == "n":
            return None
        if tag in ("b", "s", "i"):
            return node[1]
        if tag == "f":
            return float(node[1])
        if tag == "c":
            return complex(float(node[1]), float(node[2]))
        if tag == "y":
            return base64.b64decode(node[1])
        if tag == "t":
            return tuple(build(n) for n in node[1])
        if tag == "l":
            return [build(n) for n in node[1]]
        if tag == "d":
            return {build(k): build(v) for k, v in node[1]}
        if tag == "g":
            return members[node[1]][()]
        if tag in ("a", "m"):
            return members[node[1]]
        raise ValueError(f"unknown tree node {tag!r}")

    return build(manifest["root"])


# --- pickle ------------------------------------------------------------------------------------


def _pickle_dump(value: Any) -> bytes:
    import pickle

    import cloudpickle

    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def _pickle_load(payload: bytes) -> Any:
    # the store verifies every payload's checksum before it gets here
    import pickle

    return pickle.loads(payload)


def _always(value: Any) -> bool:
    return True


def _ensure_builtins() -> None:
    if _builtin:
        return
    builtins = [
        Serializer("npy", _is_plain_ndarray, _npy_dump, _npy_load),
        Serializer("parquet", _is_pandas, _parquet_dump, _parquet_load),
        Serializer("arrow-ipc", _is_arrow_table, _ipc_dump, _ipc_load),
        Serializer("json", _json_exact, _json_dump, _json_load),
        Serializer("tree", _is_tree, _tree_dump, _tree_load),
        Serializer("pickle", _always, _pickle_dump, _pickle_load),
    ]
    for ser in builtins:
        _by_name.setdefault(ser.name, ser)
    _builtin.extend(builtins)


_ensure_builtins()
