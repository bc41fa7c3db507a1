"""Pinned digests: the encoding must not drift, or every user's cache silently goes cold.

``golden_digests.json`` holds the digest of each value built by ``golden_values()``. The test
fails on any difference. If a change of the encoding is intended, bump the cache-key version
in the release notes and regenerate the file with::

    python tests/hashing/test_golden.py --regenerate
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import fractions
import json
import pathlib
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

GOLDEN = Path(__file__).with_name("golden_digests.json")


class Mode(enum.Enum):
    FAST = "fast"


@dataclasses.dataclass(frozen=True)
class Config:
    alpha: float
    layers: tuple[int, ...]


class Span(NamedTuple):
    start: int
    stop: int


# The qualified names of the classes above are part of their digests; pin them so that the
# golden file does not depend on how pytest names this module.
for _cls in (Mode, Config, Span):
    _cls.__module__ = "golden"


def golden_values() -> dict[str, Any]:
    """About forty representative values, built deterministically."""
    values: dict[str, Any] = {
        "none": None,
        "true": True,
        "false": False,
        "int_zero": 0,
        "int_small": -7,
        "int_huge": 3**200,
        "float": 1.5,
        "float_neg_zero": -0.0,
        "float_nan": float("nan"),
        "float_inf": float("inf"),
        "complex": complex(1.0, -2.5),
        "str": "hello",
        "str_unicode": "héllo wörld ✓",
        "bytes": b"\x00\x01\xff",
        "bytes_big": bytes(range(256)) * 400,
        "bytearray": bytearray(b"abc"),
        "list": [1, "a", 2.0, None],
        "tuple": (1, "a", 2.0, None),
        "nested": {"a": [1, {"b": (2, 3)}], "c": {4, 5}},
        "dict_mixed_keys": {1: "int", "1": "str", (1,): "tuple"},
        "set": {3, 1, 2},
        "frozenset": frozenset({"x", "y"}),
        "ordered_dict": collections.OrderedDict([("b", 1), ("a", 2)]),
        "range": range(2, 20, 3),
        "slice": slice(1, None, 2),
        "decimal": Decimal("-12.3400"),
        "fraction": fractions.Fraction(22, 7),
        "datetime": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
        "datetime_utc": dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=dt.timezone.utc),
        "date": dt.date(1999, 12, 31),
        "time": dt.time(12, 0, 1, 5),
        "timedelta": dt.timedelta(days=-1, seconds=5),
        "uuid": uuid.UUID("0123456789abcdef0123456789abcdef"),
        "posix_path": pathlib.PurePosixPath("/data/x.csv"),
        "windows_path": pathlib.PureWindowsPath(r"C:\data\x.csv"),
        "enum": Mode.FAST,
        "dataclass": Config(alpha=0.1, layers=(64, 32)),
        "namedtuple": Span(0, 10),
        "type": int,
        "np_float64_array": ((np.arange(20, dtype=np.float64) - 7.5) / 8).reshape(4, 5),
        "np_int32_fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        "np_structured": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "np_datetime": np.array(["2024-01-01", "NaT"], dtype="M8[s]"),
        "np_object": np.array(["a", 1, None], dtype=object),
        "np_bool_0d": np.array(True),
        "np_scalar": np.float32(0.25),
        "np_dtype": np.dtype("<U7"),
    }
    try:
        import pandas as pd

        values["pandas_frame"] = pd.DataFrame(
            {"x": np.arange(3, dtype=np.int64), "y": [0.5, 1.5, np.nan]}, index=[10, 20, 30]
        )
        values["pandas_series"] = pd.Series([1.0, 2.0], name="s")
    except ImportError:
        pass
    try:
        import pyarrow as pa

        values["arrow_table"] = pa.table({"n": pa.array([1, None, 3], type=pa.int64())})
    except ImportError:
        pass
    return values


def current_digests() -> dict[str, str]:
    from mlflowkit.hashing import hash_value

    return {name: hash_value(value) for name, value in golden_values().items()}


def test_golden_digests_do_not_drift() -> None:
    assert GOLDEN.exists(), f"missing {GOLDEN.name}; run: python {__file__} --regenerate"
    expected: dict[str, str] = json.loads(GOLDEN.read_text())
    current = current_digests()
    assert len(expected) >= 40
    drifted = {
        k: (expected[k], v) for k, v in current.items() if k in expected and expected[k] != v
    }
    assert not drifted, f"digests changed: {sorted(drifted)}"
    assert set(expected) - set(current) <= {"pandas_frame", "pandas_series", "arrow_table"}


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        raise SystemExit(f"usage: python {sys.argv[0]} --regenerate")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    GOLDEN.write_text(json.dumps(current_digests(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
