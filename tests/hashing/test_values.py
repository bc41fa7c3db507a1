"""hash_value: identity rules, containers, registry, errors, NumPy, pandas, pyarrow, devices."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import fractions
import functools
import itertools
import json
import os
import pathlib
import struct
import subprocess
import sys
import uuid
import zoneinfo
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import blake3
import numpy as np
import pytest

from mlflowkit.errors import HashingError
from mlflowkit.hashing import digest_value, hash_bytes, hash_value, register_hasher
from mlflowkit.hashing.arrays import set_device_data_digest

ROOT = Path(__file__).resolve().parents[2]


def all_distinct(values: list[Any]) -> bool:
    digests = [hash_value(v) for v in values]
    return len(set(digests)) == len(digests)


# --------------------------------------------------------------------------------------------
# scalars and identity


def test_digest_is_64_lowercase_hex() -> None:
    digest = hash_value({"a": [1, 2.5, None]})
    assert len(digest) == 64
    assert digest == digest.lower()
    assert bytes.fromhex(digest) == digest_value({"a": [1, 2.5, None]})


def test_type_is_part_of_identity() -> None:
    one = [
        1,
        1.0,
        True,
        "1",
        b"1",
        bytearray(b"1"),
        1 + 0j,
        Decimal(1),
        fractions.Fraction(1),
        np.int64(1),
        np.int32(1),
        np.float64(1.0),
        np.bool_(True),
        [1],
        (1,),
        {1},
        frozenset({1}),
        {1: None},
    ]
    assert all_distinct(one)
    assert all_distinct([0, 0.0, False, "", b"", None, (), [], {}, set(), frozenset()])


def test_integers_of_any_size() -> None:
    edge = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**200, -(2**200), 0, -1, 255, 256]
    assert all_distinct(edge)
    assert hash_value(2**200) == hash_value(int("1" + "0" * 60, 10) * 0 + 2**200)


def test_nan_is_canonical_and_signed_zeros_differ() -> None:
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
    nans = [float("nan"), -float("nan"), payload_nan, float("inf") - float("inf")]
    assert len({hash_value(x) for x in nans}) == 1
    assert hash_value(complex(float("nan"), 1)) == hash_value(complex(-float("nan"), 1))
    assert hash_value(np.float32("nan")) == hash_value(-np.float32("nan"))
    assert hash_value(-0.0) != hash_value(0.0)  # documented: bitwise, like array data
    assert hash_value(float("inf")) != hash_value(float("-inf"))


def test_strings_bytes_and_buffers() -> None:
    assert hash_value("\ud800") != hash_value("\ufffd")  # lone surrogates hash, injectively
    big = bytes(range(256)) * 1024  # 256 KiB: digested, not inlined
    assert hash_value(big) == hash_value(bytes(big))
    assert hash_value(big) != hash_value(bytearray(big))
    assert hash_value(big) != hash_value(big[:-1] + b"\x00")
    view = np.arange(6, dtype=np.int32).data
    assert hash_value(view) == hash_value(np.arange(6, dtype=np.int32).data)
    assert hash_value(view) != hash_value(view.cast("B"))  # format is part of the view
    strided = np.arange(12, dtype=np.int32).data[::2]
    assert hash_value(strided) == hash_value(np.arange(12, dtype=np.int32)[::2].copy().data)


def test_hash_bytes_is_plain_blake3() -> None:
    small = b"mlflowkit"
    large = bytes(3 << 20)
    assert hash_bytes(small) == blake3.blake3(small).hexdigest()
    assert hash_bytes(large) == blake3.blake3(large).hexdigest()
    assert hash_bytes(np.ones(4).data) == blake3.blake3(np.ones(4).tobytes()).hexdigest()


def test_decimal_fraction_range_slice_uuid() -> None:
    assert hash_value(Decimal("1.0")) != hash_value(Decimal("1.00"))
    assert hash_value(Decimal("NaN")) == hash_value(Decimal("NaN"))
    assert hash_value(fractions.Fraction(2, 4)) == hash_value(fractions.Fraction(1, 2))
    assert all_distinct([range(3), range(0, 3, 2), slice(3), slice(0, 3), (0, 3, None)])
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert hash_value(u) == hash_value(uuid.UUID(str(u)))
    assert hash_value(u) != hash_value(u.bytes)


def test_dates_times_and_timezones() -> None:
    naive = dt.datetime(2024, 3, 1, 12, 30)
    utc = naive.replace(tzinfo=dt.timezone.utc)
    paris = naive.replace(tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    values = [naive, utc, paris, naive.date(), naive.time(), utc.timetz(), dt.timedelta(1)]
    assert all_distinct(values)
    assert hash_value(paris) == hash_value(
        dt.datetime(2024, 3, 1, 12, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    )
    assert hash_value(dt.timedelta(hours=24)) == hash_value(dt.timedelta(days=1))
    fold0 = dt.datetime(2024, 10, 27, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert hash_value(fold0) != hash_value(fold0.replace(fold=1))
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert hash_value(naive.replace(tzinfo=plus_one)) != hash_value(utc)


def test_paths_hash_by_flavour_and_text() -> None:
    assert hash_value(pathlib.PurePosixPath("a/b")) != hash_value(pathlib.PureWindowsPath("a/b"))
    assert hash_value(pathlib.PurePosixPath("a/b")) == hash_value(pathlib.PosixPath("a/b"))
    assert hash_value(pathlib.PurePosixPath("a/b")) != hash_value("a/b")


# --------------------------------------------------------------------------------------------
# containers


def test_dict_and_set_order_do_not_matter() -> None:
    items = [(f"k{i}", [i, {i, -i}]) for i in range(50)]
    forward, backward = dict(items), dict(reversed(items))
    assert list(forward) != list(backward)
    assert hash_value(forward) == hash_value(backward)
    assert hash_value({3, 1, 2}) == hash_value({2, 3, 1})
    assert hash_value({(1, "a"), (2, "b")}) == hash_value({(2, "b"), (1, "a")})
    assert hash_value({"a": 1, "b": 2}) != hash_value({"a": 2, "b": 1})


def test_nesting_is_unambiguous() -> None:
    assert all_distinct(
        [[[1, 2], 3], [1, [2, 3]], [1, 2, 3], [[1, 2, 3]], ((1, 2), 3), ["12", 3], ["1", "23"]]
    )
    assert all_distinct([{"a": "bc"}, {"ab": "c"}, {("a", "b"): "c"}])


def test_special_collections_keep_their_semantics() -> None:
    od1 = collections.OrderedDict([("a", 1), ("b", 2)])
    od2 = collections.OrderedDict([("b", 2), ("a", 1)])
    assert hash_value(od1) != hash_value(od2)  # OrderedDict equality is ordered
    assert hash_value(od1) != hash_value(dict(od1))
    dd = collections.defaultdict(list, {"a": [1]})
    assert hash_value(dd) != hash_value(collections.defaultdict(set, {"a": [1]}))
    assert hash_value(collections.deque([1, 2])) != hash_value([1, 2])
    assert hash_value(collections.Counter("aab")) == hash_value(collections.Counter("aba"))
    assert hash_value(collections.Counter("aab")) != hash_value({"a": 2, "b": 1})


def test_cycles_raise_hashing_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(HashingError, match="contains itself"):
        hash_value(loop)
    d: dict[str, Any] = {}
    d["self"] = [d]
    with pytest.raises(HashingError, match="cycle"):
        hash_value(d)
    shared = [1, 2]
    assert hash_value([shared, shared]) == hash_value([[1, 2], [1, 2]])  # sharing is no cycle


def test_deep_nesting_does_not_recurse() -> None:
    value: Any = 0
    for i in range(100_000):
        value = [value] if i % 2 else {"k": value}
    assert len(hash_value(value)) == 64


# --------------------------------------------------------------------------------------------
# classes: enums, dataclasses, named tuples, types, functions


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Size(enum.IntEnum):
    SMALL = 1


class Shade(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class OtherPoint:
    x: float
    y: float


class Pair(NamedTuple):
    a: int
    b: int


def test_enums_dataclasses_namedtuples_and_types() -> None:
    assert all_distinct([Color.RED, Color.BLUE, Shade.RED, Size.SMALL, 1])
    assert hash_value(Point(1, 2)) == hash_value(Point(1, 2, cache={"x": object()}))
    assert all_distinct([Point(1, 2), Point(2, 1), OtherPoint(1, 2), (1, 2)])
    assert all_distinct([Pair(1, 2), (1, 2), [1, 2]])
    assert all_distinct([int, float, Point, Color, type(None)])
    assert hash_value(Point) == hash_value(Point)


def test_functions_hash_by_code() -> None:
    def f(x: int) -> int:
        return x + 1

    def g(x: int) -> int:
        return x + 2

    assert hash_value(f) != hash_value(g)
    assert hash_value(functools.partial(f, 1)) != hash_value(functools.partial(f, 2))
    assert hash_value(functools.partial(f, 1)) != hash_value(f)
    assert all_distinct([len, max, str.upper, str.lower, np.add, np.multiply])


class MyInt(int):
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


def test_subclasses_of_builtins_keep_their_type() -> None:
    assert hash_value(MyInt(3)) != hash_value(3)
    assert hash_value(MyList([1, 2])) != hash_value([1, 2])
    assert hash_value(MyList([1, 2])) == hash_value(MyList([1, 2]))


# --------------------------------------------------------------------------------------------
# registry and errors


class Unknown:
    pass


def test_unhashable_values_fail_loudly_with_a_fix() -> None:
    with pytest.raises(HashingError) as info:
        hash_value({"model": Unknown()})
    message = str(info.value)
    assert "Unknown" in message
    assert "register_hasher" in message
    assert "__mlflowkit_hash__" in message
    assert info.value.type_name is not None and info.value.type_name.endswith("Unknown")
    with pytest.raises(HashingError):
        hash_value(object())
    with pytest.raises(HashingError):
        hash_value(iter([1]))


class Celsius:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


class Fahrenheit:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


class HotCelsius(Celsius):
    pass


def test_register_hasher_covers_value_and_type_name() -> None:
    register_hasher(Celsius)(lambda c: c.degrees)

    @register_hasher(Fahrenheit)
    def _fahrenheit(f: Fahrenheit) -> float:
        return f.degrees

    assert hash_value(Celsius(20.0)) == hash_value(Celsius(20.0))
    assert hash_value(Celsius(20.0)) != hash_value(Celsius(21.0))
    assert hash_value(Celsius(20.0)) != hash_value(Fahrenheit(20.0))
    assert hash_value(Celsius(20.0)) != hash_value(20.0)
    assert hash_value(HotCelsius(20.0)) != hash_value(Celsius(20.0))  # subclass, own name
    assert hash_value(HotCelsius(20.0)) == hash_value(HotCelsius(20.0))


def test_register_hasher_rejects_native_types_and_reports_failures() -> None:
    with pytest.raises(HashingError, match="built-in"):
        register_hasher(int)(lambda x: x)

    class Broken:
        pass

    register_hasher(Broken)(lambda b: 1 / 0)
    with pytest.raises(HashingError, match="ZeroDivisionError"):
        hash_value(Broken())


@dataclasses.dataclass
class LateRegistered:
    x: int
    scratch: int = 0


def test_a_registration_replaces_an_earlier_resolution() -> None:
    structural = hash_value(LateRegistered(1, scratch=5))
    assert structural == hash_value(LateRegistered(1, scratch=5))
    register_hasher(LateRegistered)(lambda v: (v.x, v.scratch))
    assert hash_value(LateRegistered(1, scratch=5)) != structural
    assert hash_value(LateRegistered(1, scratch=5)) != hash_value(LateRegistered(1, scratch=6))


class Versioned:
    def __init__(self, name: str, version: int) -> None:
        self.name, self.version = name, version

    def __mlflowkit_hash__(self) -> tuple[str, int]:
        return (self.name, self.version)


class SelfLoop:
    def __mlflowkit_hash__(self) -> SelfLoop:
        return self


def test_own_hash_method() -> None:
    assert hash_value(Versioned("a", 1)) == hash_value(Versioned("a", 1))
    assert hash_value(Versioned("a", 1)) != hash_value(Versioned("a", 2))
    assert hash_value(Versioned("a", 1)) != hash_value(("a", 1))
    with pytest.raises(HashingError, match="itself"):
        hash_value(SelfLoop())


def test_importing_hashing_is_light() -> None:
    code = (
        "import sys, mlflowkit.hashing, mlflowkit.files\n"
        "from mlflowkit.hashing import hash_value\n"
        "hash_value((1, 'a', {2.0: [None]}))\n"
        "heavy = ['pandas', 'pyarrow', 'dask', 'distributed', 'cupy', 'numba']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# numpy


def test_array_layout_does_not_matter() -> None:
    a = np.arange(24, dtype=np.float64).reshape(4, 6)
    expected = hash_value(a)
    assert hash_value(np.asfortranarray(a)) == expected
    assert hash_value(a.astype(">f8")) == expected  # byte order is storage, not value
    view = np.arange(48, dtype=np.float64).reshape(4, 12)[:, ::2]
    assert hash_value(view) == hash_value(np.ascontiguousarray(view))
    big = np.arange(3 << 20, dtype=np.float32).reshape(-1, 3)
    assert hash_value(big.T) == hash_value(np.ascontiguousarray(big.T))  # blockwise copy path
    assert hash_value(np.asfortranarray(big)) == hash_value(big)


def test_array_dtype_and_shape_are_identity() -> None:
    a = np.arange(6, dtype=np.float64)
    assert all_distinct([a, a.astype(np.float32), a.reshape(2, 3), a.reshape(3, 2), a.tolist()])
    assert all_distinct(
        [
            np.array(["2024-01-01"], dtype="M8[D]"),
            np.array(["2024-01-01"], dtype="M8[D]").astype("M8[s]"),
            np.zeros(3, dtype=[("a", "<f8"), ("b", "<i4")]),
            np.zeros(3, dtype=[("b", "<f8"), ("a", "<i4")]),
            np.zeros(3, dtype=np.dtype([("a", "<f8"), ("b", "<i4")], align=True)),
        ]
    )
    assert hash_value(np.zeros(0)) != hash_value(np.zeros((0, 3)))
    assert hash_value(np.float64(2.0)) != hash_value(np.array(2.0))
    assert hash_value(np.dtype("f8")) == hash_value(np.dtype(">f8").newbyteorder("<"))
    assert hash_value(np.dtype("f8")) != hash_value(np.dtype("f4"))


def test_object_arrays_hash_element_wise() -> None:
    a = np.array([{"x": 1}, [1, 2], "s", None], dtype=object)
    b = np.array([{"x": 1}, [1, 2], "s", None], dtype=object)
    assert hash_value(a) == hash_value(b)
    b[0] = {"x": 2}
    assert hash_value(a) != hash_value(b)
    loop = np.empty(1, dtype=object)
    loop[0] = loop
    with pytest.raises(HashingError):
        hash_value(loop)
    strings = np.array(["a", "bb"], dtype=np.dtypes.StringDType())
    assert hash_value(strings) == hash_value(np.array(["a", "bb"], dtype=np.dtypes.StringDType()))
    assert hash_value(strings) != hash_value(np.array(["a", "bc"], dtype=np.dtypes.StringDType()))
    with_objects = np.array([(1, "a")], dtype=[("n", "i8"), ("o", "O")])
    assert hash_value(with_objects) != hash_value(
        np.array([(1, "b")], dtype=[("n", "i8"), ("o", "O")])
    )


class TaggedArray(np.ndarray):
    """An ndarray subclass of the user's: hashes as the array it views."""


def test_memmap_and_subclasses_hash_as_arrays(tmp_path: Path) -> None:
    data = np.arange(100, dtype=np.int16).reshape(10, 10)
    mm = np.memmap(tmp_path / "a.bin", dtype=np.int16, mode="w+", shape=(10, 10))
    mm[:] = data
    mm.flush()
    assert hash_value(mm) == hash_value(data)
    assert hash_value(data.view(TaggedArray)) == hash_value(data)
    del mm
    masked = np.ma.array([1, 2, 3], mask=[False, True, False])
    assert hash_value(masked) != hash_value(np.ma.array([1, 2, 3], mask=[False, False, False]))
    assert hash_value(masked) != hash_value(np.array([1, 2, 3]))


def test_numpy_scalars() -> None:
    assert all_distinct([np.int64(1), np.int32(1), np.uint8(1), np.float16(1), 1])
    assert hash_value(np.datetime64("2024-01-01")) != hash_value(np.datetime64("2024-01-01", "s"))
    assert hash_value(np.str_("abc")) != hash_value("abc")
    assert hash_value(np.complex128(complex(1, float("nan")))) == hash_value(
        np.complex128(complex(1, -float("nan")))
    )


# --------------------------------------------------------------------------------------------
# pandas and pyarrow


def test_pandas_frames_by_names_dtypes_index_and_values() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 1.5], "c": ["x", "y", None]})
    assert hash_value(df) == hash_value(df.copy())
    assert hash_value(df) == hash_value(
        pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 1.5], "c": ["x", "y", None]})
    )
    variants = [
        df,
        df[["b", "a", "c"]],
        df.rename(columns={"a": "A"}),
        df.astype({"a": "int32"}),
        df.set_axis([10, 11, 12]),
        df.assign(c=["x", "y", "z"]),
        df.iloc[:2],
    ]
    assert all_distinct(variants)
    s = pd.Series([1.0, 2.0], name="s")
    assert all_distinct([s, s.rename("t"), s.to_frame(), pd.Index([1.0, 2.0])])


def test_pandas_extension_types() -> None:
    pd = pytest.importorskip("pandas")
    cat = pd.Series(pd.Categorical(["u", "v", "u"]))
    assert hash_value(cat) == hash_value(pd.Series(pd.Categorical(["u", "v", "u"])))
    assert hash_value(cat) != hash_value(pd.Series(pd.Categorical(["u", "v", "u"], ordered=True)))
    assert hash_value(cat) != hash_value(
        pd.Series(pd.Categorical(["u", "v", "u"], categories=["v", "u"]))
    )
    nullable = pd.Series([1, None, 3], dtype="Int64")
    assert hash_value(nullable) != hash_value(pd.Series([1, 0, 3], dtype="Int64"))
    assert hash_value(nullable) == hash_value(pd.Series([1, pd.NA, 3], dtype="Int64"))
    utc = pd.Series(pd.date_range("2024-01-01", periods=3, tz="UTC"))
    assert hash_value(utc) != hash_value(utc.dt.tz_convert("Europe/Paris"))
    multi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
    assert hash_value(multi) != hash_value(multi.set_names(["k", "m"]))
    objects = pd.Series([pd.NA, pd.NaT, None, pd.Timestamp("2024-01-01", tz="UTC")], dtype=object)
    assert hash_value(objects) == hash_value(objects.copy())
    assert all_distinct([pd.NA, pd.NaT, None, float("nan")])
    assert hash_value(pd.Timestamp("2024-01-01")) != hash_value(dt.datetime(2024, 1, 1))


def test_pyarrow_by_schema_and_logical_values() -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table(
        {"n": [1, 2, None, 4], "s": ["a", None, "ccc", "d"], "f": [0.5, 1.5, 2.5, None]}
    )
    rechunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 3)])
    assert rechunked.column("n").num_chunks == 2
    assert hash_value(rechunked) == hash_value(table)
    assert hash_value(table.replace_schema_metadata({"x": "y"})) == hash_value(table)
    assert hash_value(table.slice(1, 2)) == hash_value(
        pa.table({"n": [2, None], "s": [None, "ccc"], "f": [1.5, 2.5]})
    )
    assert all_distinct(
        [
            table,
            table.rename_columns(["n", "s", "g"]),
            table.cast(pa.schema([("n", pa.int32()), ("s", pa.string()), ("f", pa.float64())])),
            pa.record_batch(table.to_batches()[0].columns, names=table.column_names),
            table.column("n"),
            table.column("n").chunk(0),
        ]
    )
    nested = pa.array([[1, 2], None, [3]])
    assert hash_value(nested) == hash_value(pa.array([[1, 2], None, [3]]))
    assert hash_value(nested) != hash_value(pa.array([[1, 2], [], [3]]))
    dictionary = pa.array(["a", "b", "a"]).dictionary_encode()
    assert hash_value(dictionary) != hash_value(pa.array(["a", "b", "a"]))


def test_arrow_null_slots_do_not_matter() -> None:
    pa = pytest.importorskip("pyarrow")
    values = np.array([1, 2, 3], dtype=np.int64)
    garbage = np.array([1, 99, 3], dtype=np.int64)
    mask = np.array([False, True, False])
    assert hash_value(pa.array(values, mask=mask)) == hash_value(pa.array(garbage, mask=mask))


# --------------------------------------------------------------------------------------------
# device arrays


class FakeDeviceArray:
    """Exposes ``__cuda_array_interface__`` like CuPy; holds its bytes on the host."""

    def __init__(self, host: np.ndarray[Any, Any]) -> None:
        self.host = np.ascontiguousarray(host)
        self.dtype = self.host.dtype
        self.shape = self.host.shape

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "descr": self.dtype.descr,
            "data": (0, False),
            "version": 3,
            "strides": None,
        }


@pytest.fixture
def host_device_digest() -> Iterator[None]:
    def digest(obj: Any) -> bytes:
        assert isinstance(obj, FakeDeviceArray)
        return blake3.blake3(obj.host.tobytes()).digest()

    previous = set_device_data_digest(digest)
    yield
    set_device_data_digest(previous)


@pytest.mark.usefixtures("host_device_digest")
def test_device_arrays_equal_the_equal_numpy_array() -> None:
    for host in (
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros(5, dtype=[("a", "<f8"), ("b", "<i2")]),
        np.array([True, False]),
    ):
        assert hash_value(FakeDeviceArray(host)) == hash_value(host)
    a = np.arange(4.0)
    assert hash_value(FakeDeviceArray(a)) != hash_value(FakeDeviceArray(a.reshape(2, 2)))


def test_device_digest_must_be_32_bytes() -> None:
    previous = set_device_data_digest(lambda obj: b"short")
    try:
        with pytest.raises(HashingError, match="32 bytes"):
            hash_value(FakeDeviceArray(np.arange(3)))
    finally:
        set_device_data_digest(previous)


def test_real_gpu_module_under_the_cuda_simulator() -> None:
    """With ``mlflowkit.gpu`` present, a Numba device array equals the NumPy array."""
    gpu = ROOT / "mlflowkit" / "gpu" / "__init__.py"
    if not gpu.exists() or "device_data_digest" not in gpu.read_text():
        pytest.skip("mlflowkit.gpu.device_data_digest is not available in this checkout")
    pytest.importorskip("numba")
    code = (
        "import json, numpy as np\n"
        "from numba import cuda\n"
        "from mlflowkit.hashing import hash_value\n"
        "a = np.arange(1000, dtype=np.float64).reshape(10, 100)\n"
        "print(json.dumps([hash_value(cuda.to_device(a)), hash_value(a)]))\n"
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    device, host = json.loads(out.stdout.strip().splitlines()[-1])
    assert device == host


def test_many_small_values_stay_distinct() -> None:
    values: list[Any] = list(range(-50, 50))
    values += [float(i) / 3 for i in range(50)]
    values += ["".join(p) for p in itertools.permutations("abc")]
    values += [(i, j) for i in range(5) for j in range(5)]
    assert all_distinct(values)


def test_lazily_known_stdlib_leaves_hash_alike_in_a_fresh_process() -> None:
    # decimal, fractions and uuid are not imported by mlflowkit: their encoders join on the
    # first value seen, first or nested, of the type or of a subclass
    class D(Decimal):
        pass

    values = [[Decimal("2.50")], (fractions.Fraction(1, 3),), {"u": uuid.UUID(int=7)}, D("3")]
    here = [hash_value(v) for v in values]
    code = (
        "import json, sys, mlflowkit\n"
        "assert not {'decimal', 'fractions'} & set(sys.modules), sorted(sys.modules)\n"
        "from mlflowkit.errors import HashingError\n"
        "from mlflowkit.hashing import hash_value, register_hasher\n"
        "import decimal, fractions, uuid\n"
        "try:\n"
        "    register_hasher(decimal.Decimal)(str)\n"
        "except HashingError as e:\n"
        "    refused = 'built-in' in str(e)\n"
        "class D(decimal.Decimal):\n"
        "    pass\n"
        "D.__qualname__ = " + repr(D.__qualname__) + "\n"
        "D.__module__ = " + repr(D.__module__) + "\n"
        "values = [[decimal.Decimal('2.50')], (fractions.Fraction(1, 3),),\n"
        "          {'u': uuid.UUID(int=7)}, D('3')]\n"
        "print(json.dumps([refused, [hash_value(v) for v in values]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    refused, there = json.loads(out.stdout)
    assert refused
    assert there == here
    assert hash_value(Decimal("2.50")) != hash_value(Decimal("2.5"))
