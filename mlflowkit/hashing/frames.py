"""Encodings of pandas and pyarrow values, by names, dtypes and column buffers (never pickle).

Loaded the first time a pandas or pyarrow value is hashed; ``import mlflowkit.hashing`` imports
neither library.

Invariants
----------
* A ``DataFrame`` is its column labels, its index and each column's values; a ``Series`` its
  name, index and values; an ``Index`` its names and values (a ``RangeIndex`` its start, stop
  and step; a ``MultiIndex`` its names, levels and codes); a ``Categorical`` its categories,
  codes and ordered flag. ``attrs`` and index frequencies are not part of a value.
* Column values of a NumPy dtype are hashed as NumPy arrays (in place, no copy); nullable
  (masked) columns as their NA mask plus their values with NA slots set to zero; Arrow-backed
  columns through the Arrow encoding below; any other extension array element by element.
* An Arrow array is ``(type, length, validity, values)`` where ``validity`` is ``None`` without
  nulls, and ``values`` ignores whatever bytes sit under null slots and outside a slice; so the
  same logical column gives the same digest however it is chunked, sliced or built. Schema
  metadata is not part of a table (it holds e.g. the writing pandas' version); field names,
  types and nullability are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlflowkit.hashing import values as _v

__all__ = ["arrow_values", "register_pandas", "register_pyarrow"]


# --------------------------------------------------------------------------------------------
# pyarrow


def _arrow_fixed_width(col: Any, valid: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    t = col.type
    width = t.byte_width if hasattr(t, "byte_width") and t.bit_width % 8 == 0 else t.bit_width // 8
    n = len(col)
    buf = col.buffers()[1]
    if buf is None or n == 0:
        return np.zeros(0, dtype=np.uint8)
    data = np.frombuffer(buf, dtype=np.uint8, count=n * width, offset=col.offset * width)
    if valid is not None:
        data = data.reshape(n, width).copy()
        data[~valid] = 0
        data = data.reshape(-1)
    return data


def _arrow_var_width(col: Any, large: bool) -> tuple[str, Any, Any]:
    import pyarrow as pa

    if col.null_count:
        col = col.fill_null(pa.scalar(b"" if pa.types.is_binary(col.type) else "", col.type))
    n = len(col)
    if n == 0:
        return ("var", np.zeros(0, dtype="<i8"), np.zeros(0, dtype=np.uint8))
    offsets_type = np.dtype("<i8" if large else "<i4")
    buffers = col.buffers()
    offsets = np.frombuffer(
        buffers[1], dtype=offsets_type, count=n + 1, offset=col.offset * offsets_type.itemsize
    )
    start, stop = int(offsets[0]), int(offsets[-1])
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8, count=stop - start, offset=start)
        if buffers[2] is not None and stop > start
        else np.zeros(0, dtype=np.uint8)
    )
    return ("var", np.diff(offsets).astype("<i8"), data)


def arrow_values(col: Any) -> tuple[Any, ...]:
    """The canonical ``(type, length, validity, values)`` of an Arrow array or chunked array.

    Parameters
    ----------
    col:
        A ``pyarrow.Array`` or ``pyarrow.ChunkedArray``.
    """
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    t = col.type
    valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
    values: Any
    if pa.types.is_boolean(t):
        values = col.fill_null(False).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_binary(t):
        values = _arrow_var_width(col, large=False)
    elif pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        values = _arrow_var_width(col, large=True)
    elif pa.types.is_dictionary(t):
        values = ("dictionary", arrow_values(col.indices), arrow_values(col.dictionary))
    elif (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_temporal(t)
        or pa.types.is_decimal(t)
        or pa.types.is_fixed_size_binary(t)
    ):
        values = ("fixed", _arrow_fixed_width(col, valid))
    else:
        values = ("items", col.to_pylist())
    return (str(t), len(col), valid, values)


def _schema(schema: Any) -> tuple[tuple[str, str, bool], ...]:
    return tuple((f.name, str(f.type), bool(f.nullable)) for f in schema)


def _table(t: Any) -> tuple[Any, ...]:
    return (_schema(t.schema), tuple(arrow_values(c) for c in t.columns))


def register_pyarrow() -> None:
    """Register pyarrow tables, record batches, arrays, schemas, types and scalars."""
    import pyarrow as pa

    _v.register_reducer(pa.Table, _table, name="pyarrow.Table")
    _v.register_reducer(pa.RecordBatch, _table, name="pyarrow.RecordBatch")
    _v.register_reducer(pa.Array, arrow_values, name="pyarrow.Array")
    _v.register_reducer(pa.ChunkedArray, arrow_values, name="pyarrow.ChunkedArray")
    _v.register_reducer(pa.Schema, _schema, name="pyarrow.Schema")
    _v.register_reducer(pa.DataType, str, name="pyarrow.DataType")
    _v.register_reducer(pa.Scalar, lambda s: (str(s.type), s.as_py()), name="pyarrow.Scalar")


# --------------------------------------------------------------------------------------------
# pandas


def _extension_values(arr: Any) -> tuple[Any, ...]:
    import pandas as pd

    dtype = arr.dtype
    name = str(dtype)
    if isinstance(arr, pd.Categorical):
        return ("categorical", arr.categories, arr.codes, bool(arr.ordered))
    if isinstance(dtype, pd.DatetimeTZDtype):
        return ("datetimetz", name, np.asarray(arr, dtype=f"M8[{dtype.unit}]"))
    if isinstance(arr, (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)):
        zero = False if isinstance(arr, pd.arrays.BooleanArray) else 0
        data = arr.to_numpy(dtype=dtype.numpy_dtype, na_value=zero)
        return ("masked", name, np.asarray(arr.isna()), data)
    if hasattr(arr, "__arrow_array__"):
        try:
            import pyarrow as pa

            return ("arrow", name, arrow_values(pa.array(arr)))
        except ImportError:
            pass
    return ("items", name, np.asarray(arr, dtype=object))


def _series_values(s: Any) -> Any:
    if isinstance(s.dtype, np.dtype):
        return s.to_numpy()
    return _extension_values(s.array)


def _index(idx: Any) -> tuple[Any, ...]:
    import pandas as pd

    if isinstance(idx, pd.RangeIndex):
        return ("range", idx.name, idx.start, idx.stop, idx.step)
    if isinstance(idx, pd.MultiIndex):
        codes = tuple(np.asarray(c) for c in idx.codes)
        return ("multi", tuple(idx.names), tuple(idx.levels), codes)
    return ("values", idx.name, _series_values(idx))


def _series(s: Any) -> tuple[Any, ...]:
    return (s.name, s.index, _series_values(s))


def _frame(df: Any) -> tuple[Any, ...]:
    columns = tuple(_series_values(df.iloc[:, i]) for i in range(df.shape[1]))
    return (df.columns, df.index, columns)


def _categorical(c: Any) -> tuple[Any, ...]:
    return (c.categories, np.asarray(c.codes), bool(c.ordered))


def _timestamp(ts: Any) -> tuple[int, str | None]:
    return (int(ts.value), None if ts.tz is None else str(ts.tz))


def register_pandas() -> None:
    """Register pandas frames, series, indexes, categoricals and scalars."""
    import pandas as pd

    reg = _v.register_reducer
    reg(pd.DataFrame, _frame, name="pandas.DataFrame")
    reg(pd.Series, _series, name="pandas.Series")
    reg(pd.Index, _index, name="pandas.Index")
    reg(pd.Categorical, _categorical, name="pandas.Categorical")
    reg(pd.Timestamp, _timestamp, name="pandas.Timestamp")
    reg(pd.Timedelta, lambda td: int(td.value), name="pandas.Timedelta")
    reg(type(pd.NaT), lambda _: "NaT", name="pandas.NaT")
    reg(type(pd.NA), lambda _: "NA", name="pandas.NA")
    reg(pd.Period, lambda p: (p.freqstr, int(p.ordinal)), name="pandas.Period")
    reg(pd.Interval, lambda i: (i.left, i.right, i.closed), name="pandas.Interval")
    reg(pd.api.extensions.ExtensionArray, _extension_values, name="pandas.ExtensionArray")
