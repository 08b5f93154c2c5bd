"""PostgreSQL binary COPY rows built and read with numpy: no per-value text formatting.

Every row has the same fixed layout (a ``timestamptz`` then ``float8`` columns), so a whole
frame is one numpy structured array and one ``tobytes()`` or ``frombuffer``. Text formatting
with ``DataFrame.to_csv`` cost 48 ms per year of bars and 117 ms per year of features; this
is about 1 ms. NULLs travel as NaN: written, they become NULL in the INSERT that reads the
staging table; read, the query must turn them into NaN (a NULL has no fixed width).
"""

import numpy as np
import pandas as pd

_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = (-1).to_bytes(2, "big", signed=True)
# PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
_PG_EPOCH_US = 946_684_800_000_000


def _row_type(columns: int) -> np.dtype:
    fields = [("count", ">i2"), ("ts_len", ">i4"), ("ts", ">i8")]
    for i in range(columns):
        fields += [(f"len{i}", ">i4"), (f"v{i}", ">f8")]
    return np.dtype(fields)


def encode(timestamps: pd.DatetimeIndex, columns: list[np.ndarray]) -> bytes:
    """Binary COPY payload for rows ``(timestamp, *columns)``; columns are float64."""
    rows = np.empty(len(timestamps), dtype=_row_type(len(columns)))
    rows["count"] = 1 + len(columns)
    rows["ts_len"] = 8
    rows["ts"] = timestamps.tz_convert("UTC").as_unit("us").asi8 - _PG_EPOCH_US
    for i, values in enumerate(columns):
        rows[f"len{i}"] = 8
        rows[f"v{i}"] = np.asarray(values, dtype=np.float64)
    return _HEADER + rows.tobytes() + _TRAILER


def decode(payload: bytes, columns: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Rows ``(timestamptz, *float8 columns)`` of a ``COPY … TO STDOUT (FORMAT binary)``,
    none NULL, as a UTC index and a ``(rows, columns)`` float64 array."""
    row_type = _row_type(columns)
    body = len(payload) - len(_HEADER) - len(_TRAILER)
    if not payload.startswith(_HEADER) or body % row_type.itemsize:
        raise ValueError("not a binary COPY of (timestamptz, float8 …) rows without NULLs")
    count = body // row_type.itemsize
    rows = np.frombuffer(payload, dtype=row_type, offset=len(_HEADER), count=count)
    if (rows["count"] != 1 + columns).any() or any(
        (rows[f"len{i}"] != 8).any() for i in range(columns)
    ):
        raise ValueError("binary COPY rows are not all (timestamptz, float8 …) without NULLs")
    index = pd.to_datetime(rows["ts"].astype(np.int64) + _PG_EPOCH_US, unit="us", utc=True)
    values = np.column_stack([rows[f"v{i}"].astype(np.float64) for i in range(columns)])
    return index.as_unit("ns"), values.reshape(len(rows), columns)
