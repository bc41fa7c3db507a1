"""Type compatibility of step wiring, decided while planning.

Invariants
----------
* ``compatible(actual, expected)`` answers "can a value whose static type is ``actual`` be
  passed where ``expected`` is annotated?" for type *hints*, not values. It is reflexive,
  ``Any`` (or a missing annotation) is compatible both ways, and it never raises: forms it cannot
  reason about are accepted (the run-time return check still guards them).
* ``check_value(value, expected)`` checks a concrete value with beartype (PEP 484's implicit
  numeric tower on: an ``int`` is accepted where ``float`` is annotated).
* NumPy scalars are accepted where ``int``, ``float``, ``complex`` or ``bool`` is annotated when
  they convert to it without loss (``numpy.integer`` for ``int``, ``float16``/``32``/``64``
  for ``float``, ``complex64``/``128`` for ``complex``, ``numpy.bool_`` for ``bool``, plus the
  tower); they are kept as they are, not converted. ``numpy.longdouble`` is not a ``float``.
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import inspect
import sys
import types
import typing
from typing import Any, TypeVar, Union

__all__ = [
    "attribute_type",
    "check_value",
    "compatible",
    "describe",
    "did_you_mean",
    "is_listlike",
    "is_unknown",
    "item_type",
    "safe_repr",
    "short_repr",
    "tuple_length",
    "unannotate",
]

_NONE_TYPE = type(None)
_UNION_TYPES: tuple[Any, ...] = (Union, types.UnionType)

# PEP 484 numeric tower: int is acceptable where float or complex is expected.
_TOWER: dict[type, tuple[type, ...]] = {float: (int,), complex: (int, float)}

#: NumPy's scalar types that stand for each Python number type, by name (numpy may not be
#: imported: then no value or class can be one of them). Only those that convert without loss.
_NUMPY_NUMBERS: dict[type, tuple[str, ...]] = {
    int: ("integer",),
    float: ("integer", "float16", "float32", "float64"),
    complex: ("integer", "float16", "float32", "float64", "complex64", "complex128"),
    bool: ("bool_",),
}


def _numpy_number(cls: Any, expected: type) -> bool:
    """Whether ``cls`` is a NumPy scalar type that converts to ``expected`` without loss."""
    np = sys.modules.get("numpy")
    names = _NUMPY_NUMBERS.get(expected)
    if np is None or names is None or not isinstance(cls, type):
        return False
    return issubclass(cls, tuple(getattr(np, name) for name in names))


def describe(hint: Any) -> str:
    """A short human-readable name of a type hint."""
    if hint is Any:
        return "Any"
    if hint is _NONE_TYPE or hint is None:
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        mod = hint.__module__
        return hint.__qualname__ if mod in ("builtins", "typing") else f"{mod}.{hint.__qualname__}"
    text = repr(hint)
    return text.replace("typing.", "")


def _strip(hint: Any) -> Any:
    """Remove Annotated, NewType and TypeVar wrappers; map None to NoneType."""
    while True:
        if hint is None:
            return _NONE_TYPE
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            hint = typing.get_args(hint)[0]
            continue
        if isinstance(hint, TypeVar):
            if hint.__bound__ is not None:
                hint = hint.__bound__
                continue
            if hint.__constraints__:
                hint = Union[hint.__constraints__]  # noqa: UP007 - built from a tuple at run time
                continue
            return Any
        supertype = getattr(hint, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            hint = supertype
            continue
        if isinstance(hint, (str, typing.ForwardRef)):
            return Any
        return hint


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in _UNION_TYPES


def _origin_class(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is None:
        return hint
    return origin


def _subclass(actual: Any, expected: Any) -> bool:
    if actual is expected or expected is object:
        return True
    try:
        if issubclass(actual, expected):
            return True
    except TypeError:
        return True  # a form issubclass cannot decide (protocols with members, ...): accept
    return any(actual is t for t in _TOWER.get(expected, ())) or _numpy_number(actual, expected)


def compatible(actual: Any, expected: Any) -> bool:
    """Whether a value statically typed ``actual`` fits a parameter annotated ``expected``."""
    if actual is expected or expected is Any or actual is Any:
        return True
    actual = _strip(actual)
    expected = _strip(expected)
    if expected is Any or actual is Any or expected is object:
        return True
    if actual == expected:
        return True
    if _is_union(actual):
        return all(compatible(a, expected) for a in typing.get_args(actual))
    if _is_union(expected):
        return any(compatible(actual, e) for e in typing.get_args(expected))
    a_origin, e_origin = typing.get_origin(actual), typing.get_origin(expected)
    if a_origin is typing.Literal:
        values = typing.get_args(actual)
        if e_origin is typing.Literal:
            return set(values) <= set(typing.get_args(expected))
        return all(compatible(type(v), expected) for v in values)
    if e_origin is typing.Literal:
        return False  # a general type is not known to be one of the literal values
    if expected is type or e_origin is type:
        return actual is type or typing.get_origin(actual) is type or a_origin is type
    if e_origin is cabc.Callable or expected is cabc.Callable:
        return _subclass(_origin_class(actual), cabc.Callable)
    a_cls, e_cls = _origin_class(actual), _origin_class(expected)
    if not isinstance(a_cls, type) or not isinstance(e_cls, type):
        return True  # typing forms we do not reason about
    if not _subclass(a_cls, e_cls):
        return False
    a_args, e_args = typing.get_args(actual), typing.get_args(expected)
    if not a_args or not e_args:
        return True
    if issubclass(e_cls, tuple) and issubclass(a_cls, tuple):
        return _tuple_compatible(a_args, e_args)
    if issubclass(a_cls, tuple) and not issubclass(e_cls, tuple):
        # tuple[int, str] passed as Sequence[T]: each element must fit T
        target = e_args[0]
        elems = a_args[:1] if len(a_args) == 2 and a_args[1] is Ellipsis else a_args
        return all(compatible(a, target) for a in elems)
    if len(a_args) != len(e_args):
        # e.g. Mapping[K, V] vs a one-arg subclass: only compare the last (value) parameter
        return compatible(a_args[-1], e_args[-1])
    return all(compatible(a, e) for a, e in zip(a_args, e_args, strict=True) if a is not Ellipsis)


def _tuple_compatible(a_args: tuple[Any, ...], e_args: tuple[Any, ...]) -> bool:
    a_var = len(a_args) == 2 and a_args[1] is Ellipsis
    e_var = len(e_args) == 2 and e_args[1] is Ellipsis
    if e_var:
        elems = a_args[:1] if a_var else a_args
        return all(compatible(a, e_args[0]) for a in elems)
    if a_var:
        return all(compatible(a_args[0], e) for e in e_args)
    if a_args == ((),) or e_args == ((),):
        return a_args == e_args
    return len(a_args) == len(e_args) and all(
        compatible(a, e) for a, e in zip(a_args, e_args, strict=True)
    )


_CONF: Any = None


_IS_BEARABLE: Any = None
_BEARTYPE_EXCEPTION: Any = None


_SEQUENCE_ORIGINS = (list, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set)
_MAPPING_ORIGINS = (dict, cabc.Mapping, cabc.MutableMapping)


def check_value(value: Any, expected: Any) -> bool:
    """Whether the concrete ``value`` satisfies the annotation ``expected``.

    Every element of a list, set, tuple or dict is checked (not a sample of them: a wrong
    value that passed would be cached for good); other hints (arrays by dtype, protocols,
    literals, ...) are checked by beartype.
    """
    if type(expected) is type:  # a plain class: the common case, decided without beartype
        if expected is object:
            return True
        if expected in _TOWER:
            if isinstance(value, (expected, *_TOWER[expected])):
                return True
        elif isinstance(value, expected):
            return True
        return expected in _NUMPY_NUMBERS and _numpy_number(type(value), expected)
    expected_s = _strip(expected)
    if expected_s is Any or expected_s is object:
        return True
    if _is_union(expected_s):
        return any(check_value(value, member) for member in typing.get_args(expected_s))
    origin = typing.get_origin(expected_s)
    args = typing.get_args(expected_s)
    if args and origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(check_value(v, args[0]) for v in value)
        if args == ((),):
            return len(value) == 0
        return len(value) == len(args) and all(
            check_value(v, a) for v, a in zip(value, args, strict=True)
        )
    if args and origin in _SEQUENCE_ORIGINS and not isinstance(value, (str, bytes)):
        return isinstance(value, origin) and all(check_value(v, args[0]) for v in value)
    if len(args) == 2 and origin in _MAPPING_ORIGINS:
        return isinstance(value, origin) and all(
            check_value(k, args[0]) and check_value(v, args[1]) for k, v in value.items()
        )
    return _bearable(value, expected, expected_s)


def describe_value(value: Any) -> str:
    """The type of a value, with dtype and shape for arrays (what a type error shows)."""
    text = describe(type(value))
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and shape is not None:
        return f"{text} of dtype {dtype} and shape {tuple(shape)}"
    return text


def mismatch(value: Any, expected: Any) -> str:
    """Where in ``value`` the first element that does not fit ``expected`` is, as a clause."""
    path = _first_mismatch(value, expected, "")
    if not path:
        return ""
    where, found, wanted = path
    return f" ({where} is {found}, expected {wanted})"


def _first_mismatch(value: Any, expected: Any, where: str) -> tuple[str, str, str] | None:
    expected_s = _strip(expected)
    origin, args = typing.get_origin(expected_s), typing.get_args(expected_s)
    items: list[tuple[str, Any, Any]] = []
    if args and origin is tuple and isinstance(value, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            items = [(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)]
        elif len(args) == len(value):
            items = [
                (f"{where}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
    elif args and origin in _SEQUENCE_ORIGINS and isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)]
    elif len(args) == 2 and origin in _MAPPING_ORIGINS and isinstance(value, dict):
        for k, v in value.items():
            if not check_value(k, args[0]):
                return f"key {k!r}{where}", describe(type(k)), describe(args[0])
            items.append((f"{where}[{k!r}]", v, args[1]))
    for path, item, hint in items:
        if not check_value(item, hint):
            deeper = _first_mismatch(item, hint, path)
            if deeper is not None:
                return deeper
            return f"item {path}", f"{describe_value(item)} {_short_repr(item)}", describe(hint)
    return None


def _short_repr(value: Any) -> str:
    return short_repr(value, 40)


def _bearable(value: Any, expected: Any, expected_s: Any) -> bool:
    global _CONF, _IS_BEARABLE, _BEARTYPE_EXCEPTION
    if _IS_BEARABLE is None:
        from beartype import BeartypeConf
        from beartype.door import is_bearable
        from beartype.roar import BeartypeException

        _CONF = BeartypeConf(is_pep484_tower=True)
        _IS_BEARABLE, _BEARTYPE_EXCEPTION = is_bearable, BeartypeException
    try:
        return bool(_IS_BEARABLE(value, expected, conf=_CONF))
    except _BEARTYPE_EXCEPTION:
        # beartype cannot check this hint; fall back to the class when there is one
        cls = _origin_class(expected_s)
        if isinstance(cls, type):
            return isinstance(value, cls)
        return True


# hint helpers for planning ----------------------------------------------------------------


def tuple_length(hint: Any) -> int | None:
    """How many items a value of this tuple hint has (None when not a fixed-length tuple)."""
    hint = unannotate(hint)
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if args and not (len(args) == 2 and args[1] is Ellipsis) and args != ((),):
            return len(args)
    fields = getattr(hint, "_fields", None)  # NamedTuple classes
    if isinstance(hint, type) and issubclass(hint, tuple) and fields is not None:
        return len(fields)
    return None


def unannotate(hint: Any) -> Any:
    """The hint inside ``Annotated[...]`` layers."""
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def item_type(hint: Any, key: Any) -> Any:
    """The type of ``value[key]`` for a value of this hint (Any when unknown).

    Known: tuple elements (named tuples too), list and sequence items (a slice keeps the
    hint), dict and mapping values, and the keys of a ``TypedDict``.
    """
    hint = unannotate(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0] if isinstance(key, int) else hint if isinstance(key, slice) else Any
        if isinstance(key, int) and -len(args) <= key < len(args):
            return args[key]
        return Any
    if origin in (list, typing.Sequence, typing.MutableSequence) and args:
        return args[0] if isinstance(key, int) else hint
    if origin in (dict, typing.Mapping, typing.MutableMapping) and len(args) == 2:
        return args[1]
    if isinstance(hint, type):
        if typing.is_typeddict(hint) and isinstance(key, str):
            return _class_hints(hint).get(key, Any)
        fields = getattr(hint, "_fields", None)  # NamedTuple classes
        if (
            issubclass(hint, tuple)
            and isinstance(fields, tuple)
            and isinstance(key, int)
            and -len(fields) <= key < len(fields)
        ):
            return _class_hints(hint).get(fields[key], Any)
    return Any


def is_unknown(hint: Any) -> bool:
    """Whether a hint says nothing about a value (``Any``, ``object``, an unbound TypeVar)."""
    if hint is Any or hint is object:
        return True
    if isinstance(hint, type):  # a plain class (the common case, asked once per step call)
        return False
    hint = _strip(hint)
    return hint is Any or hint is object


#: ``(class, attribute) -> type`` already worked out by ``attribute_type``.
_ATTRIBUTE_TYPES: dict[tuple[Any, str], Any] = {}


def attribute_type(hint: Any, name: str) -> Any:
    """The type of ``value.name`` for a value of this hint (Any when it cannot be known).

    Read from the class: its annotations (dataclass fields, named tuple fields, annotated
    attributes), the return annotation of a property, ``Callable`` for a method, and for
    NumPy arrays the types NumPy's stubs give their attributes (``shape`` is
    ``tuple[int, ...]``, ``dtype`` a ``numpy.dtype``, ...). Never raises.
    """
    hint = _strip(hint)
    cls = _origin_class(hint)
    if not isinstance(cls, type) or cls is object:
        return Any
    if name == "T" and _is_ndarray(cls):
        return hint  # the transpose: the same array type (and dtype)
    found = _ATTRIBUTE_TYPES.get((cls, name), _MISSING)
    if found is _MISSING:
        try:
            found = _attribute_type(cls, name)
        except Exception:  # a class that cannot be inspected: nothing is known
            found = Any
        if len(_ATTRIBUTE_TYPES) > 10_000:
            _ATTRIBUTE_TYPES.clear()
        _ATTRIBUTE_TYPES[cls, name] = found
    return found


_MISSING: Any = object()


def _is_ndarray(cls: type) -> bool:
    return any(b.__module__ == "numpy" and b.__name__ == "ndarray" for b in cls.__mro__)


def _ndarray_attribute(name: str) -> Any:
    """What NumPy's stubs (``numpy/__init__.pyi``) say an ``ndarray`` attribute is."""
    np = sys.modules["numpy"]  # loaded: the hint is one of its classes
    ints = tuple[int, ...]
    return {
        "shape": ints,
        "strides": ints,
        "ndim": int,
        "size": int,
        "itemsize": int,
        "nbytes": int,
        "dtype": np.dtype,
        "real": np.ndarray,
        "imag": np.ndarray,
        "flat": np.flatiter,
        "flags": np.flagsobj if hasattr(np, "flagsobj") else Any,
        "data": memoryview,
        "base": np.ndarray | None,
    }.get(name, _MISSING)


_CLASS_HINTS: dict[type, dict[str, Any]] = {}


def _class_hints(cls: type) -> dict[str, Any]:
    """A class's resolved annotations (its own and inherited), worked out once per class."""
    found = _CLASS_HINTS.get(cls)
    if found is None:
        try:
            found = typing.get_type_hints(cls)
        except Exception:  # an annotation that cannot be resolved here
            found = {}
        if len(_CLASS_HINTS) > 1_000:
            _CLASS_HINTS.clear()
        _CLASS_HINTS[cls] = found
    return found


def _attribute_type(cls: type, name: str) -> Any:
    if _is_ndarray(cls):
        found = _ndarray_attribute(name)
        if found is not _MISSING:
            return found
    if not typing.is_typeddict(cls):  # a TypedDict's annotations are its keys, not attributes
        annotated = _class_hints(cls).get(name, _MISSING)
        if annotated is not _MISSING:
            if typing.get_origin(annotated) is typing.ClassVar:
                args = typing.get_args(annotated)
                return args[0] if args else Any
            return annotated
    try:
        attr = inspect.getattr_static(cls, name)
    except AttributeError:
        return Any
    if isinstance(attr, property):
        if attr.fget is None:
            return Any
        try:
            return typing.get_type_hints(attr.fget).get("return", Any)
        except Exception:
            return Any
    if isinstance(attr, (staticmethod, classmethod)) or callable(attr):
        return cabc.Callable[..., Any]
    return Any


def is_listlike(hint: Any) -> bool:
    """Whether the hint is a list, sequence or tuple type."""
    hint = unannotate(hint)
    origin = typing.get_origin(hint) or hint
    return origin in (list, typing.Sequence, typing.MutableSequence, tuple) or (
        isinstance(origin, type) and issubclass(origin, (list, tuple))
    )


def did_you_mean(kwargs: dict[str, Any], sig: inspect.Signature) -> str:
    """`` Did you mean 'alpha'?`` for keyword arguments that are close to a parameter name."""
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return ""
    known = list(sig.parameters)
    hints = []
    for given in kwargs:
        if given not in sig.parameters:
            close = difflib.get_close_matches(given, known, n=1)
            if close:
                hints.append(f"{close[0]!r} instead of {given!r}")
    return f" Did you mean {', '.join(hints)}?" if hints else ""


def short_repr(value: Any, limit: int = 60) -> str:
    """``safe_repr(value)``, cut to ``limit`` characters."""
    text = safe_repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a description of the value when ``repr`` fails; never raises.

    A message about a value must not fail on it: an int too long to turn into digits
    (``sys.get_int_max_str_digits``), a value nested deeper than the recursion limit, or a
    ``__repr__`` that raises are described instead.
    """
    try:
        return repr(value)
    except Exception as exc:
        name = describe(type(value))
        if isinstance(value, int):
            return f"<{name} of {value.bit_length()} bits>"
        if isinstance(exc, RecursionError):
            return f"<{name} nested too deeply to show>"
        return f"<{name} whose repr() raised {type(exc).__name__}>"
