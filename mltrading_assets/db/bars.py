"""Reading and writing ``market_data``."""

import io

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db import binary_copy
from mltrading_assets.db.tables import BAR_VALUE_COLUMNS, market_data
from mltrading_assets.db.upsert import UpsertCounts, copy_upsert

# Text statements, built once: per call, an SQLAlchemy select cost more than its round trip.
_BAR_TIME = {
    aggregate: sa.text(
        f'SELECT {aggregate}("timestamp") FROM public.market_data '
        "WHERE symbol = :symbol AND source = :source"
    )
    for aggregate in ("min", "max")
}


def _bar_time(conn: sa.Connection, symbol: str, source: str, aggregate: str) -> pd.Timestamp | None:
    value = conn.execute(_BAR_TIME[aggregate], {"symbol": symbol, "source": source}).scalar_one()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def last_bar_time(conn: sa.Connection, symbol: str, source: str) -> pd.Timestamp | None:
    """Start of the newest stored bar of ``symbol`` from ``source``, or None."""
    return _bar_time(conn, symbol, source, "max")


def first_bar_time(conn: sa.Connection, symbol: str, source: str) -> pd.Timestamp | None:
    """Start of the oldest stored bar of ``symbol`` from ``source``, or None."""
    return _bar_time(conn, symbol, source, "min")


def write_bars(
    conn: sa.Connection,
    symbol: str,
    source: str,
    bars: pd.DataFrame,
    in_progress: np.ndarray | None = None,
) -> UpsertCounts:
    """Upsert validated bars (UTC bar-start index, ``BAR_VALUE_COLUMNS``); ``in_progress``
    marks bars that had not ended when fetched (none when omitted)."""
    values = {name: bars[name].to_numpy(dtype=float) for name in BAR_VALUE_COLUMNS}
    flags = np.zeros(len(bars)) if in_progress is None else np.asarray(in_progress, dtype=float)
    values["in_progress"] = flags
    return copy_upsert(conn, market_data, {"symbol": symbol, "source": source}, bars.index, values)


def _read_statement(since: bool, lookback: bool) -> str:
    # NaN for NULL keeps every row the same width, which the binary decoder relies on.
    values = ", ".join(f"COALESCE({name}, 'NaN')" for name in BAR_VALUE_COLUMNS)
    where = "symbol = %(symbol)s AND source = %(source)s"
    if lookback:
        # From the lookback-th bar before `since`, found on the (symbol, timestamp) index;
        # with fewer bars than that before it, from the first bar.
        where += """ AND "timestamp" >= COALESCE((
            SELECT "timestamp" FROM public.market_data
            WHERE symbol = %(symbol)s AND source = %(source)s AND "timestamp" < %(since)s
            ORDER BY "timestamp" DESC OFFSET %(skip)s LIMIT 1), '-infinity')"""
    elif since:
        where += ' AND "timestamp" >= %(since)s'
    return (
        f'SELECT "timestamp", {values} FROM public.market_data WHERE {where} ORDER BY "timestamp"'
    )


def read_bars(
    conn: sa.Connection,
    symbol: str,
    source: str,
    since: pd.Timestamp | None = None,
    lookback: int = 0,
) -> pd.DataFrame:
    """Bars of ``symbol`` in time order, from ``lookback`` bars before ``since`` (all if None)."""
    statement = _read_statement(since is not None, since is not None and lookback > 0)
    parameters = {"symbol": symbol, "source": source, "since": since, "skip": lookback - 1}
    # A binary COPY decoded by numpy: fetching rows cost ~2.5 ms per 600 bars in Python
    # objects (and ~4 ms more as SQLAlchemy Rows), this ~1 ms. COPY takes no bind
    # parameters, so psycopg2 quotes them into the statement.
    cursor = conn.connection.driver_connection.cursor()
    query = cursor.mogrify(statement, parameters).decode()
    payload = io.BytesIO()
    cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", payload)
    index, values = binary_copy.decode(payload.getvalue(), len(BAR_VALUE_COLUMNS))
    return pd.DataFrame(values, index=index.rename("timestamp"), columns=BAR_VALUE_COLUMNS)
