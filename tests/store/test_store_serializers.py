"""Serializers: choice by type, exact round-trips (types included), plugins, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlflowkit.errors import SerializationError
from mlflowkit.store import register_serializer, serializer_names, unregister_serializer
from mlflowkit.store.serializers import dumps, get_serializer, loads, serializer_for


def roundtrip(value: Any, serializer: str | None = None) -> tuple[str, Any]:
    name, payload = dumps(value, serializer)
    return name, loads(name, bytes(payload))


def identical(a: Any, b: Any) -> bool:
    """Equal values of identical types, recursively (NaN equals NaN, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(identical(a[k], b[k]) for k in a)
            and all(identical(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, (set, frozenset)):
        return bool(a == b)
    return bool(a == b)


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_like = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
any_leaves = (
    json_leaves
    | st.floats()  # NaN and inf included
    | st.binary(max_size=8)
    | st.complex_numbers(allow_nan=False)
    | st.integers(min_value=2**70)
)
mixed = st.recursive(
    any_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.integers() | st.text() | st.booleans(), children, max_size=4)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_json_like_values_go_to_json_and_come_back_identical(value: Any) -> None:
    name, back = roundtrip(value)
    assert name == "json"
    assert identical(value, back)


@settings(max_examples=200, deadline=None)
@given(mixed)
def test_any_nested_value_comes_back_with_identical_types(value: Any) -> None:
    name, back = roundtrip(value)
    assert identical(value, back)
    assert name in {"json", "tree", "pickle"}


@pytest.mark.parametrize(
    "value",
    [(1, 2), [1, (2, 3)], {1: "a"}, {"a": {2: "b"}}, {True: 1}, [float("-inf")], (b"x", 1j)],
    ids=repr,
)
def test_containers_json_would_change_go_to_tree_not_pickle(value: Any) -> None:
    name, back = roundtrip(value)
    assert name == "tree"
    assert identical(value, back)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        OrderedDict(a=1),
        b"bytes",
        {1, 2},
        np.float64(1.5),
        np.int64(3),
        10**5000,
    ],
    ids=lambda v: type(v).__name__,
)
def test_values_json_would_change_go_to_pickle(value: Any) -> None:
    name, back = roundtrip(value)
    assert name == "pickle"
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(back)
    else:
        assert identical(value, back)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "json"),
        (True, "json"),
        (1.0, "json"),
        (-0.0, "json"),
        ("é\ud800", "json"),
        (None, "json"),
    ],
)
def test_scalars_keep_their_exact_type(value: Any, expected: str) -> None:
    name, back = roundtrip(value)
    assert name == expected
    assert identical(value, back)


array_dtypes = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.unsigned_integer_dtypes(endianness="=")
    | hnp.floating_dtypes(endianness="=")
    | hnp.complex_number_dtypes(endianness="=")
    | hnp.datetime64_dtypes()
    | hnp.timedelta64_dtypes()
    | hnp.unicode_string_dtypes(max_len=4)
    | hnp.byte_string_dtypes(max_len=4)
    | st.just(np.dtype(">i4"))
    | st.just(np.dtype([("a", "<i2"), ("b", "<f8")]))
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_arrays_round_trip_bit_exact_through_npy(arr: np.ndarray[Any, Any]) -> None:
    name, back = roundtrip(arr)
    assert name == "npy"
    assert type(back) is np.ndarray
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


def test_zero_d_empty_and_fortran_arrays() -> None:
    for arr in (
        np.array(3.5),
        np.empty((0, 3), dtype=np.int16),
        np.asfortranarray(np.ones((2, 3))),
    ):
        name, back = roundtrip(arr)
        assert name == "npy"
        assert back.shape == arr.shape and back.dtype == arr.dtype
        np.testing.assert_array_equal(back, arr)


def test_object_arrays_go_to_pickle_not_npy() -> None:
    arr = np.array([{"a": 1}, None], dtype=object)
    assert serializer_for(arr).name == "pickle"
    name, back = roundtrip(arr)
    assert name == "pickle"
    assert back.dtype == object and back[0] == {"a": 1}


def test_array_subclasses_other_than_memmap_keep_their_type() -> None:
    masked = np.ma.masked_array([1, 2, 3], mask=[False, True, False])
    name, back = roundtrip(masked)
    assert name == "pickle"
    assert isinstance(back, np.ma.MaskedArray)
    assert back.mask.tolist() == [False, True, False]


def test_memmap_is_stored_as_the_array_it_views(tmp_path: Any) -> None:
    mm = np.memmap(tmp_path / "m.bin", dtype=np.float32, mode="w+", shape=(4,))
    mm[:] = [1, 2, 3, 4]
    name, back = roundtrip(mm)
    assert name == "npy"
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, [1, 2, 3, 4])
    del mm


# pandas / pyarrow ------------------------------------------------------------------------------


def _frames() -> Iterator[Any]:
    pd = pytest.importorskip("pandas")
    yield pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    yield pd.DataFrame({"a": [1.5, float("nan")]}, index=pd.Index(["p", "q"], name="key"))
    yield pd.DataFrame({"a": pd.Categorical(["u", "v", "u"])}, index=pd.RangeIndex(5, 8))
    yield pd.DataFrame({"t": pd.date_range("2021-01-01", periods=3, tz="UTC")})
    yield pd.DataFrame(
        {"a": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["i", "j"])
    )
    yield pd.DataFrame({"n": pd.array([1, None], dtype="Int64")})


def test_dataframes_round_trip_through_parquet() -> None:
    pd = pytest.importorskip("pandas")
    for df in _frames():
        name, back = roundtrip(df)
        assert name == "parquet", df
        pd.testing.assert_frame_equal(back, df, check_exact=True)
        assert list(back.dtypes) == list(df.dtypes)


def test_series_round_trip_with_name_and_index() -> None:
    pd = pytest.importorskip("pandas")
    for s in (
        pd.Series([1.0, 2.0], name="score", index=pd.Index(["a", "b"], name="k")),
        pd.Series([1, 2, 3]),
    ):
        name, back = roundtrip(s)
        assert name == "parquet"
        assert type(back) is pd.Series
        pd.testing.assert_series_equal(back, s, check_exact=True)
        assert back.name == s.name


@pytest.mark.parametrize(
    "make",
    [
        lambda pd: pd.DataFrame({"a": [1, "x"]}, dtype=object),  # mixed object column
        lambda pd: pd.DataFrame({1: [1, 2], 2: [3, 4]}),  # non-str column labels
        lambda pd: pd.DataFrame({"a": [[1], [2, 3]]}),  # nested cells
        lambda pd: pd.DataFrame({"a": ["x", "y"]}, dtype=object),  # object would become str
        lambda pd: pd.DataFrame({"a": [1.0]}, index=pd.date_range("2020", periods=1, freq="D")),
        lambda pd: pd.Series([1, 2], name=3),
    ],
    ids=["mixed-object", "int-columns", "nested", "object-str", "freq", "int-name"],
)
def test_frames_parquet_cannot_represent_fall_back_to_pickle(make: Any) -> None:
    pd = pytest.importorskip("pandas")
    value = make(pd)
    name, back = roundtrip(value)
    assert name == "pickle"
    if isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value)
    else:
        pd.testing.assert_frame_equal(back, value)
        assert list(back.dtypes) == list(value.dtypes)


def test_forcing_parquet_on_a_frame_it_cannot_represent_fails_clearly() -> None:
    pd = pytest.importorskip("pandas")
    with pytest.raises(SerializationError, match=r"DataFrame.*'parquet'.*register_serializer"):
        dumps(pd.DataFrame({"a": [1, "x"]}, dtype=object), "parquet")


def test_arrow_tables_round_trip_through_ipc_exactly() -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table(
        {
            "a": pa.array([1, 2], type=pa.int8()),
            "s": pa.array(["x", None], type=pa.large_string()),
            "d": pa.array(["u", "u"]).dictionary_encode(),
        }
    )
    name, back = roundtrip(table)
    assert name == "arrow-ipc"
    assert back.equals(table) and back.schema == table.schema


def test_import_of_the_store_stays_light() -> None:
    code = (
        "import sys, mlflowkit.store, mlflowkit.store.fsspec, mlflowkit.lineage;"
        "heavy = [m for m in ('pandas', 'pyarrow', 'dask', 'distributed', 'networkx') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# registry --------------------------------------------------------------------------------------


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def point_serializer() -> Iterator[list[str]]:
    calls: list[str] = []

    def dump(p: Point) -> bytes:
        calls.append("dump")
        return f"{p.x},{p.y}".encode()

    def load(data: bytes) -> Point:
        calls.append("load")
        x, y = data.decode().split(",")
        return Point(int(x), int(y))

    register_serializer("test-point", Point, dump, load)
    try:
        yield calls
    finally:
        unregister_serializer("test-point")


def test_registered_serializer_is_chosen_by_type(point_serializer: list[str]) -> None:
    assert serializer_names()[0] == "test-point"
    name, back = roundtrip(Point(1, 2))
    assert name == "test-point"
    assert back == Point(1, 2)
    assert point_serializer == ["dump", "load"]
    # others are unaffected
    assert roundtrip(3)[0] == "json"


def test_registered_serializer_with_a_predicate() -> None:
    register_serializer(
        "test-even", lambda v: type(v) is int and v % 2 == 0, lambda v: str(v).encode(),
        lambda b: int(b),
    )  # fmt: skip
    try:
        assert roundtrip(4) == ("test-even", 4)
        assert roundtrip(3) == ("json", 3)
    finally:
        unregister_serializer("test-even")


def test_registry_refuses_duplicates_and_builtin_names(point_serializer: list[str]) -> None:
    with pytest.raises(SerializationError, match="already registered"):
        register_serializer("test-point", Point, bytes, bytes)
    with pytest.raises(SerializationError, match="already registered"):
        register_serializer("pickle", Point, bytes, bytes, replace=True)
    with pytest.raises(SerializationError, match="invalid"):
        register_serializer("", Point, bytes, bytes)
    replaced = register_serializer("test-point", Point, bytes, bytes, replace=True)
    assert get_serializer("test-point") is replaced


def test_forced_serializer_by_name() -> None:
    assert roundtrip([1, 2], "pickle") == ("pickle", [1, 2])
    with pytest.raises(SerializationError, match=r"not fit for a value of type builtins\.tuple"):
        dumps((1, 2), "json")
    with pytest.raises(SerializationError, match="no serializer named 'nope'"):
        dumps(1, "nope")


def test_unknown_serializer_on_load_says_how_to_fix() -> None:
    with pytest.raises(SerializationError, match="register_serializer"):
        loads("not-registered-here", b"")


def test_unpicklable_value_names_type_serializer_and_fix() -> None:
    import threading

    with pytest.raises(SerializationError) as info:
        dumps(threading.Lock())
    msg = str(info.value)
    assert "_thread.lock" in msg and "'pickle'" in msg and "register_serializer" in msg


def test_broken_payload_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="'npy' could not read"):
        loads("npy", b"not an npy file")


# tuples, lists and dicts of arrays: the tree serializer ----------------------------------------


def same(a: Any, b: Any) -> bool:
    """``identical`` that also compares arrays and NumPy scalars bit for bit (type included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)):
        return bool(
            a.dtype == b.dtype and np.shape(a) == np.shape(b) and a.tobytes() == b.tobytes()
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return identical(a, b)


tree_arrays = hnp.arrays(
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.floating_dtypes(endianness="=")
    | hnp.datetime64_dtypes(),
    hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3),
)
tree_leaves = (
    tree_arrays
    | st.builds(np.float64, st.floats())
    | st.builds(np.int32, st.integers(-(2**31), 2**31 - 1))
    | st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
)
tree_keys = st.integers(-5, 5) | st.text(max_size=3) | st.booleans() | st.tuples(st.integers(0, 3))
trees = st.recursive(
    tree_leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(tree_keys, children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(trees, trees) | st.lists(trees, max_size=3) | st.dictionaries(tree_keys, trees))
def test_containers_of_arrays_round_trip_exactly_without_pickle(value: Any) -> None:
    from mlflowkit.hashing import hash_value

    name, back = roundtrip(value)
    assert name != "pickle"  # tree (or json, for plain JSON data)
    assert same(value, back)  # tuple stays tuple, list list, dict key order kept, bits kept
    assert hash_value(back) == hash_value(value)  # the content digest does not change


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(tree_arrays, tree_arrays))
def test_a_step_output_x_y_is_stored_as_a_tree(tmp_path_factory: Any, value: Any) -> None:
    from mlflowkit.store import Store

    with Store(str(tmp_path_factory.mktemp("s"))) as store:
        digest = store.put(value)
        assert store.info(digest).serializer == "tree"
        assert same(store.get(digest), value)
        assert store.verify() == []


def test_tree_members_are_each_in_their_own_safe_format() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2]})
    name, back = roundtrip({"X": np.arange(3), "frame": frame, "n": np.int64(4)})
    assert name == "tree"
    assert list(back) == ["X", "frame", "n"]
    pd.testing.assert_frame_equal(back["frame"], frame)
    assert type(back["n"]) is np.int64


@pytest.mark.parametrize(
    "value",
    [
        (np.arange(2), OrderedDict(a=1)),  # a leaf only pickle holds
        [np.array([None], dtype=object)],
        (np.ma.masked_array([1, 2], mask=[True, False]),),
        {"big": 10**5000},
    ],
    ids=["ordered-dict", "object-array", "masked-array", "huge-int"],
)
def test_trees_with_a_leaf_only_pickle_holds_go_to_pickle(value: Any) -> None:
    name, _ = roundtrip(value)
    assert name == "pickle"


def test_a_tree_payload_naming_pickle_is_refused() -> None:
    name, payload = dumps((np.arange(2), np.ones(1)))
    assert name == "tree"
    forged = bytes(payload).replace(b'["npy",', b'["pickle",', 1)
    with pytest.raises(SerializationError, match="tree"):
        loads("tree", forged)
