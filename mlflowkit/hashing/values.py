"""Canonical, tagged, prefix-free encoding of Python values, and their BLAKE3 digests.

``hash_value(obj)`` is the BLAKE3-256 digest (64 hex characters) of ``encode(obj)``.

Invariants
----------
* **Prefix-free.** Every value is written as a one-byte tag followed by a payload whose length
  is fixed by the tag, given by a length prefix, or given by a count of encodings that are
  themselves prefix-free. So no encoding is a prefix of another, and a container's encoding
  determines its elements.
* **Type is identity.** ``1``, ``1.0``, ``True``, ``"1"``, ``b"1"`` and ``numpy.int64(1)`` all
  differ; so do ``[x]`` and ``(x,)``; so do a subclass of a builtin and the builtin (the
  subclass is written as ``X | qualified name | builtin encoding``).
* **Order.** ``dict``, ``set`` and ``frozenset`` sort their element encodings (a dict element
  is ``key encoding | value encoding``), so insertion and iteration order never matter.
* **Process independence.** Nothing depends on ``id()``, ``hash()``, ``PYTHONHASHSEED``,
  ``repr()``, pickle or the machine's byte order: integers, floats and array data are written
  little-endian.
* **Floats.** Every NaN (any sign or payload) encodes as the one quiet NaN
  ``0x7ff8000000000000``. ``-0.0`` and ``0.0`` are *different* values (they are distinguishable
  and array data is hashed bitwise, where they differ too).
* **No fallback.** A value without a canonical encoding raises ``HashingError`` naming its
  type; there is no ``repr``, ``id`` or pickle based default. A cycle raises ``HashingError``.
* **No recursion.** Values are walked with an explicit stack, so deep nesting costs memory, not
  Python frames.

Dispatch is one table keyed by exact type (builtins are in it from the start). A type seen the
first time is resolved once, then cached in the table: lazy loaders registered by qualified type
name or top-level package (numpy, pandas, pyarrow: imported only when such a value is seen),
then a ``__mlflowkit_hash__`` method, then the registered base classes along the MRO, then
structural rules (enums, dataclasses, named tuples, ``__cuda_array_interface__``, subclasses of
builtins), else ``HashingError``.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import functools
import io
import pathlib
import threading
import types
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from typing import Any, TypeVar

import blake3

from mlflowkit.errors import HashingError, MlflowkitError
from mlflowkit.hashing._leaves import (
    BIG_BUFFER,
    LEAF_ENCODERS,
    adopt_stdlib_leaves,
    digest_bytes,
    encode_path,
    encode_str,
    hash_bytes,
    pack_i64,
    pack_u64,
    small_digest,
    type_name,
)

__all__ = [
    "BIG_BUFFER",
    "EncodeState",
    "digest_bytes",
    "digest_value",
    "encode",
    "hash_bytes",
    "hash_value",
    "register_encoder",
    "register_hasher",
    "register_lazy",
    "register_reducer",
    "type_name",
]

T = TypeVar("T")

_MAX_DEPTH = 1_000_000
_blake3 = blake3.blake3
_AUTO = blake3.blake3.AUTO

Encoder = Callable[["EncodeState", Any], None]


# --------------------------------------------------------------------------------------------
# the walk: an explicit stack of values and markers


class EncodeState:
    """The state of one encoding: the output buffer, the work stack, the containers entered.

    Encoders (``fn(state, obj) -> None``) either append bytes to ``state.out`` or push values
    onto ``state.stack`` (popped last-in first-out, so push children in reverse order).
    """

    __slots__ = ("active", "out", "stack")

    def __init__(self) -> None:
        self.out = bytearray()
        self.stack: list[Any] = []
        self.active: set[int] = set()

    def enter(self, obj: Any) -> None:
        """Mark ``obj`` as being encoded; push the matching exit marker yourself.

        Raises
        ------
        HashingError
            When ``obj`` is already being encoded (a cycle) or nesting is absurdly deep.
        """
        key = id(obj)
        if key in self.active:
            raise HashingError(
                f"cannot hash a {type_name(type(obj))} that contains itself (a reference "
                "cycle); expected a value whose containers form a tree. Break the cycle, or "
                "register a hasher that returns the parts that define the value.",
                type_name=type_name(type(obj)),
            )
        self.active.add(key)
        if len(self.active) > _MAX_DEPTH:
            raise HashingError(
                f"cannot hash a value nested more than {_MAX_DEPTH} levels deep; expected a "
                "finite value (does a registered hasher build ever deeper values?)",
                type_name=type_name(type(obj)),
            )

    def exit_marker(self, obj: Any) -> _Exit:
        """A marker that, when popped, ends the cycle watch of ``obj`` (keeps it alive)."""
        return _Exit(obj)


class _Exit:
    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def _on_exit(st: EncodeState, marker: _Exit) -> None:
    st.active.discard(id(marker.obj))


class _Unordered:
    """Collects the encodings of a set's elements (or a dict's items), then sorts them."""

    __slots__ = ("bounds", "count", "header", "obj", "saved")

    def __init__(self, st: EncodeState, obj: Any, header: bytes, count: int) -> None:
        self.saved = st.out
        self.header = header
        self.count = count
        self.obj = obj
        self.bounds = [0]
        st.out = bytearray()


def _on_unordered(st: EncodeState, frame: _Unordered) -> None:
    bounds = frame.bounds
    bounds.append(len(st.out))
    if len(bounds) <= frame.count:
        return
    buf = st.out
    parts = [buf[bounds[i] : bounds[i + 1]] for i in range(frame.count)]
    parts.sort()
    st.out = frame.saved
    st.out += frame.header
    st.out += b"".join(parts)
    st.active.discard(id(frame.obj))


def _enc_sequence(tag: bytes) -> Encoder:
    def enc(st: EncodeState, x: Any) -> None:
        head = tag + pack_u64(len(x))
        leaf = LEAF_ENCODERS.get
        fs = [leaf(type(e)) for e in x]
        if None not in fs:
            st.out += head + b"".join([f(e) for f, e in zip(fs, x, strict=True)])  # type: ignore[misc]
            return
        st.enter(x)
        st.out += head
        stack = st.stack
        stack.append(_Exit(x))
        stack.extend(reversed(x))

    return enc


def _enc_unordered(tag: bytes) -> Encoder:
    def enc(st: EncodeState, x: Any) -> None:
        n = len(x)
        leaf = LEAF_ENCODERS.get
        items = list(x)
        fs = [leaf(type(e)) for e in items]
        if None not in fs:
            parts = [f(e) for f, e in zip(fs, items, strict=True)]  # type: ignore[misc]
            parts.sort()
            st.out += tag + pack_u64(n) + b"".join(parts)
            return
        st.enter(x)
        frame = _Unordered(st, x, tag + pack_u64(n), n)
        push = st.stack.append
        for e in x:
            push(frame)
            push(e)

    return enc


def _enc_dict(st: EncodeState, x: dict[Any, Any]) -> None:
    n = len(x)
    leaf = LEAF_ENCODERS
    try:
        parts = [leaf[type(k)](k) + leaf[type(v)](v) for k, v in x.items()]
    except KeyError:
        pass
    else:
        parts.sort()
        st.out += b"{" + pack_u64(n) + b"".join(parts)
        return
    st.enter(x)
    frame = _Unordered(st, x, b"{" + pack_u64(n), n)
    push = st.stack.append
    for k, v in x.items():
        push(frame)
        push(v)
        push(k)


def _enc_slice(st: EncodeState, x: slice) -> None:
    st.out += b":"
    st.stack.extend((x.step, x.stop, x.start))


def _enc_as(reduce: Callable[[Any], Any]) -> Encoder:
    """``X | qualified type name | encoding of reduce(obj)`` (for stdlib container types)."""

    def enc(st: EncodeState, x: Any) -> None:
        st.enter(x)
        st.out += b"X" + encode_str(type_name(type(x)))
        st.stack.append(_Exit(x))
        st.stack.append(reduce(x))

    return enc


def _code_digest_raw(fn: Any) -> bytes:
    from mlflowkit.hashing.code import code_digest

    return bytes.fromhex(code_digest(fn))


def _enc_function(st: EncodeState, x: Any) -> None:
    st.out += b"L" + _code_digest_raw(x)


def _enc_method(st: EncodeState, x: Any) -> None:
    st.out += b"M" + _code_digest_raw(x.__func__)
    st.stack.append(x.__self__)


def _enc_builtin(st: EncodeState, x: Any) -> None:
    owner = getattr(x, "__self__", None)
    st.out += b"l" + _code_digest_raw(x)
    if owner is None or isinstance(owner, (types.ModuleType, type)):
        st.out += b"N"
    else:
        st.out += b"S"
        st.stack.append(owner)


def _enc_descriptor(st: EncodeState, x: Any) -> None:
    owner = getattr(x, "__objclass__", None)
    st.out += b"V" + encode_str(type_name(owner) if owner is not None else "?")
    st.out += encode_str(getattr(x, "__name__", "?"))


def _enc_partial(st: EncodeState, x: functools.partial[Any]) -> None:
    st.out += b"P"
    st.stack.extend((x.keywords, x.args, x.func))


def _enc_enum(st: EncodeState, x: enum.Enum) -> None:
    st.out += b"E" + encode_str(type_name(type(x)))
    st.stack.append(x._value_)


def _enc_step(st: EncodeState, x: Any) -> None:
    st.out += b"L" + _code_digest_raw(x.fn)


def _enc_dataclass(st: EncodeState, x: Any) -> None:
    names = [f.name for f in dataclasses.fields(x) if f.compare]
    st.enter(x)
    st.out += b"K" + encode_str(type_name(type(x))) + pack_u64(len(names))
    st.out += b"".join(encode_str(n) for n in names)
    stack = st.stack
    stack.append(_Exit(x))
    stack.extend(reversed([getattr(x, n) for n in names]))


def _enc_namedtuple(st: EncodeState, x: tuple[Any, ...]) -> None:
    names: tuple[str, ...] = type(x)._fields  # type: ignore[attr-defined]
    st.enter(x)
    st.out += b"U" + encode_str(type_name(type(x))) + pack_u64(len(names))
    st.out += b"".join(encode_str(n) for n in names) + pack_u64(len(x))
    stack = st.stack
    stack.append(_Exit(x))
    stack.extend(reversed(x))


def _subclass_encoder(base: type) -> Encoder:
    """Encoder for a subclass of a builtin: ``X | qualified name | the builtin's encoding``."""
    leaf = LEAF_ENCODERS.get(base)
    inner = _BUILTIN_COMPOSITE.get(base)

    def enc(st: EncodeState, x: Any) -> None:
        st.out += b"X" + encode_str(type_name(type(x)))
        if leaf is not None:
            st.out += leaf(x)
        elif inner is not None:
            inner(st, x)

    return enc


_BUILTIN_COMPOSITE: dict[type, Encoder] = {
    list: _enc_sequence(b"["),
    tuple: _enc_sequence(b"("),
    dict: _enc_dict,
    set: _enc_unordered(b"S"),
    frozenset: _enc_unordered(b"Z"),
}

_DISPATCH: dict[type, Encoder] = {
    **_BUILTIN_COMPOSITE,
    slice: _enc_slice,
    OrderedDict: _enc_as(lambda x: [(k, v) for k, v in x.items()]),  # ordered, unlike dict
    defaultdict: _enc_as(lambda x: (x.default_factory, dict(x))),
    deque: _enc_as(lambda x: (x.maxlen, list(x))),
    types.FunctionType: _enc_function,
    types.MethodType: _enc_method,
    types.BuiltinFunctionType: _enc_builtin,
    types.MethodDescriptorType: _enc_descriptor,
    types.WrapperDescriptorType: _enc_descriptor,
    types.ClassMethodDescriptorType: _enc_descriptor,
    functools.partial: _enc_partial,
    _Exit: _on_exit,
    _Unordered: _on_unordered,
}
_CORE = frozenset(_DISPATCH) | frozenset(LEAF_ENCODERS)

#: Encoders for a type and its subclasses (consulted along the MRO of an unknown type).
_BASES: dict[type, Encoder] = {
    enum.Enum: _enc_enum,
    type: lambda st, x: st.out.extend(b"C" + encode_str(type_name(x))),
    pathlib.PurePath: lambda st, x: st.out.extend(encode_path(x)),
}
#: Types registered by users (these win over lazily loaded built-in hashers).
_USER: set[type] = set()
#: Types registered through ``register_encoder`` (kept when resolved entries are forgotten).
_EXPLICIT: set[type] = set()
#: Loaders keyed by qualified type name or top-level package name.
_LAZY: dict[str, Callable[[], None]] = {}
_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------
# registration


def register_encoder(t: type, encoder: Encoder, *, subclasses: bool = True) -> None:
    """Register a low-level encoder (used by mlflowkit's own numpy, pandas, pyarrow support).

    Parameters
    ----------
    t:
        The type.
    encoder:
        ``fn(state, obj) -> None`` writing a tagged, prefix-free encoding to ``state.out`` and
        pushing child values onto ``state.stack``.
    subclasses:
        Also use it for subclasses of ``t`` that have no encoder of their own.
    """
    with _LOCK:
        if t in _USER:
            return
        _forget_resolved()
        _DISPATCH[t] = encoder
        _EXPLICIT.add(t)
        if subclasses:
            _BASES[t] = encoder


def register_reducer(t: type, fn: Callable[[Any], Any], *, name: str | None = None) -> None:
    """Register ``fn(obj) -> hashable value`` for ``t`` and its subclasses.

    The encoding is ``R | name | encoding of fn(obj)``, where ``name`` defaults to the
    qualified name of the value's type. mlflowkit's own reducers pass a stable ``name``.
    """
    register_encoder(t, _reducer(fn, name))


def register_hasher(t: type[T]) -> Callable[[Callable[[T], Any]], Callable[[T], Any]]:
    """Register how values of a type (and of its subclasses) are hashed.

    Use as ``register_hasher(SomeType)(fn)`` or as a decorator. ``fn(obj)`` returns a value
    mlflowkit can hash (typically a tuple of the fields that define the value); the digest
    covers that value and the qualified name of the value's type.

    Parameters
    ----------
    t:
        The type. Types mlflowkit encodes natively (``int``, ``list``, ...) cannot be
        overridden; types it supports through optional libraries (pandas, ...) can.

    Returns
    -------
    Callable
        A decorator that registers ``fn`` and returns it unchanged.

    Raises
    ------
    HashingError
        When ``t`` is not a class or has a native encoding.
    """
    if not isinstance(t, type):
        raise HashingError(
            f"register_hasher expects a class, found {type(t).__name__} {t!r}; "
            "call it as mk.register_hasher(SomeType)(fn)"
        )
    if t in _CORE or adopt_stdlib_leaves(t) is not None:
        raise HashingError(
            f"{type_name(t)} has a built-in canonical encoding that cannot be replaced; "
            "register a hasher for your own subclass instead",
            type_name=type_name(t),
        )

    def decorate(fn: Callable[[T], Any]) -> Callable[[T], Any]:
        if not callable(fn):
            raise HashingError(
                f"register_hasher({t.__name__}) expects a function obj -> hashable value, "
                f"found {type(fn).__name__}"
            )
        with _LOCK:
            _USER.discard(t)
            register_encoder(t, _reducer(fn, None))
            _USER.add(t)
        return fn

    return decorate


def register_lazy(name: str, loader: Callable[[], None]) -> None:
    """Run ``loader()`` (which registers encoders) the first time a matching type is seen.

    ``name`` is a qualified type name (``"pandas.core.frame.DataFrame"``) or a top-level
    package name (``"pandas"``); the loader runs at most once.
    """
    with _LOCK:
        _LAZY[name] = loader


def _forget_resolved() -> None:
    for t in [t for t in _DISPATCH if t not in _CORE and t not in _EXPLICIT]:
        del _DISPATCH[t]


def _reducer(fn: Callable[[Any], Any], name: str | None) -> Encoder:
    fixed = None if name is None else b"R" + encode_str(name)

    def enc(st: EncodeState, x: Any) -> None:
        st.enter(x)
        try:
            value = fn(x)
        except MlflowkitError:
            raise
        except Exception as exc:
            raise HashingError(
                f"the hasher registered for {type_name(type(x))} failed: "
                f"{type(exc).__name__}: {exc}",
                type_name=type_name(type(x)),
            ) from exc
        st.out += fixed if fixed is not None else b"R" + encode_str(type_name(type(x)))
        st.stack.append(_Exit(x))
        st.stack.append(value)

    return enc


def _call_own_hash(obj: Any) -> Any:
    return obj.__mlflowkit_hash__()


_own_hash = _reducer(_call_own_hash, None)


def _load_lazy(t: type) -> bool:
    loaded = False
    for base in t.__mro__:
        module = getattr(base, "__module__", None) or ""
        for key in (type_name(base), module.partition(".")[0]):
            loader = _LAZY.pop(key, None)
            if loader is not None:
                loader()
                loaded = True
    return loaded


def _device_encoder() -> Encoder:
    from mlflowkit.hashing.arrays import encode_device_array

    return encode_device_array


def _resolve(t: type) -> Encoder:
    with _LOCK:
        enc = _DISPATCH.get(t)
        leaf = adopt_stdlib_leaves(t) if enc is None else None
        if leaf is not None:
            return lambda st, x: st.out.extend(leaf(x))
        if enc is None and _load_lazy(t):
            enc = _DISPATCH.get(t)
        if enc is None and callable(getattr(t, "__mlflowkit_hash__", None)):
            enc = _own_hash
        if enc is None:
            enc = next((_BASES[b] for b in t.__mro__[1:] if b in _BASES), None)
        if enc is None:
            enc = _structural(t)
        if enc is None:
            raise _unhashable(t)
        _DISPATCH[t] = enc
        return enc


def _structural(t: type) -> Encoder | None:
    if getattr(t, "__mlflowkit_step__", False) is True:
        return _enc_step
    if hasattr(t, "__cuda_array_interface__") or getattr(t, "__cuda_ndarray__", False) is True:
        return _device_encoder()
    if issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple):
        return _enc_namedtuple
    if dataclasses.is_dataclass(t):
        return _enc_dataclass
    for base in t.__mro__[1:]:
        if base in LEAF_ENCODERS or base in _BUILTIN_COMPOSITE:
            return _subclass_encoder(base)
    return None


def _unhashable(t: type) -> HashingError:
    name = type_name(t)
    if issubclass(t, io.IOBase):
        return HashingError(
            f"cannot hash a value of type {name}: expected a value, found an open file (a "
            "position in a stream, not its content). Pass the file's path (a str or "
            "pathlib.Path) and open it inside the step, or pass mk.File(path) to make the "
            "file's content part of the cache key.",
            type_name=name,
        )
    if issubclass(t, (cabc.Iterator, cabc.AsyncIterator)):
        return HashingError(
            f"cannot hash a value of type {name}: expected a value, found an iterator (a "
            "generator, map, zip, ...), which is used up by reading it and so has no fixed "
            "content. Pass a list (e.g. list(values)) or a tuple instead.",
            type_name=name,
        )
    return HashingError(
        f"cannot hash a value of type {name}: mlflowkit has no canonical encoding for it "
        "(it never falls back to repr, id or pickle). Register one with "
        f"`mk.register_hasher({t.__name__})(fn)`, where fn returns a value mlflowkit can hash "
        "(e.g. a tuple of the fields that define the value), or define a "
        "`__mlflowkit_hash__(self)` method on the class that returns such a value.",
        type_name=name,
    )


def _load_numpy() -> None:
    from mlflowkit.hashing import arrays

    arrays.register()


def _load_masked() -> None:
    from mlflowkit.hashing import arrays

    arrays.register_masked()


def _load_pandas() -> None:
    from mlflowkit.hashing import frames

    frames.register_pandas()


def _load_pyarrow() -> None:
    from mlflowkit.hashing import frames

    frames.register_pyarrow()


def _load_sklearn() -> None:
    from mlflowkit.hashing import estimators

    estimators.register_sklearn()


_LAZY.update(
    {
        "sklearn": _load_sklearn,
        "numpy": _load_numpy,
        "numpy.ma.MaskedArray": _load_masked,
        "numpy.ma.core.MaskedArray": _load_masked,
        "pandas": _load_pandas,
        "pyarrow": _load_pyarrow,
    }
)


# --------------------------------------------------------------------------------------------
# entry points


def _encode_walk(obj: Any) -> bytearray:
    st = EncodeState()
    stack = st.stack
    stack.append(obj)
    leaf = LEAF_ENCODERS
    dispatch = _DISPATCH
    while stack:
        item = stack.pop()
        t = type(item)
        f = leaf.get(t)
        if f is not None:
            st.out += f(item)
            continue
        enc = dispatch.get(t)
        if enc is None:
            enc = _resolve(t)
        enc(st, item)
    return st.out


def encode(obj: Any) -> bytes:
    """The canonical, tagged, prefix-free encoding of ``obj`` (what ``hash_value`` digests).

    Raises
    ------
    HashingError
        When ``obj`` (or something inside it) has no canonical encoding, or holds a cycle.
    """
    f = LEAF_ENCODERS.get(type(obj))
    if f is not None:
        return f(obj)
    return bytes(_encode_walk(obj))


def digest_value(obj: Any) -> bytes:
    """The 32-byte BLAKE3 digest of ``encode(obj)``; ``hash_value`` is its hex form."""
    f = LEAF_ENCODERS.get(type(obj))
    if f is not None:
        return small_digest(f(obj))
    data = _encode_walk(obj)
    if len(data) > BIG_BUFFER:
        return _blake3(data, max_threads=_AUTO).digest()
    return _blake3(data).digest()


_INT64 = 1 << 63
_INT64_MIN = -_INT64


def hash_value(obj: Any) -> str:
    """The content digest of a value: BLAKE3-256 of its canonical encoding, 64 hex characters.

    Equal values give equal digests in every process and on every machine; the type (and for
    arrays the dtype and shape, for frames the column names and dtypes) is part of the value.

    Parameters
    ----------
    obj:
        Any supported value (see the package docstring), or a value whose type has a hasher
        registered with ``register_hasher`` or a ``__mlflowkit_hash__`` method.

    Returns
    -------
    str
        64 lowercase hex characters.

    Raises
    ------
    HashingError
        When the value (or something inside it) cannot be hashed; the message names the type
        and how to register a hasher.
    """
    # (``digest().hex()``: about 120 ns cheaper than the blake3 package's ``hexdigest()``)
    t = type(obj)
    if t is int and _INT64_MIN <= obj < _INT64:  # the commonest argument: _enc_int, inlined
        data = b"i" + pack_i64(obj)
    elif (f := LEAF_ENCODERS.get(t)) is not None:
        data = f(obj)
    elif t is tuple or t is list:  # fast path: a short sequence of leaves, as _enc_sequence
        try:
            parts = b"".join([LEAF_ENCODERS[type(e)](e) for e in obj])
        except KeyError:
            data = b""
        else:
            data = (b"(" if t is tuple else b"[") + pack_u64(len(obj)) + parts
    else:
        data = b""
    if data:  # a leaf or short sequence: small, hashed with a reused hasher
        return small_digest(data).hex()
    encoded = _encode_walk(obj)
    if len(encoded) > BIG_BUFFER:
        return _blake3(encoded, max_threads=_AUTO).digest().hex()
    return _blake3(encoded).digest().hex()
