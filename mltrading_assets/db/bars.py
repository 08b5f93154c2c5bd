"""Reading and writing ``market_data``."""

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.tables import BAR_VALUE_COLUMNS, market_data
from mltrading_assets.db.upsert import UpsertCounts, copy_upsert


def _bar_time(conn: sa.Connection, symbol: str, source: str, aggregate) -> pd.Timestamp | None:
    value = conn.execute(
        sa.select(aggregate(market_data.c.timestamp)).where(
            market_data.c.symbol == symbol, market_data.c.source == source
        )
    ).scalar_one()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def last_bar_time(conn: sa.Connection, symbol: str, source: str) -> pd.Timestamp | None:
    """Start of the newest stored bar of ``symbol`` from ``source``, or None."""
    return _bar_time(conn, symbol, source, sa.func.max)


def first_bar_time(conn: sa.Connection, symbol: str, source: str) -> pd.Timestamp | None:
    """Start of the oldest stored bar of ``symbol`` from ``source``, or None."""
    return _bar_time(conn, symbol, source, sa.func.min)


def write_bars(conn: sa.Connection, symbol: str, source: str, bars: pd.DataFrame) -> UpsertCounts:
    """Upsert validated bars (UTC bar-start index, ``BAR_VALUE_COLUMNS``)."""
    return copy_upsert(
        conn,
        market_data,
        {"symbol": symbol, "source": source},
        bars.index,
        {name: bars[name].to_numpy(dtype=float) for name in BAR_VALUE_COLUMNS},
    )


def read_bars(
    conn: sa.Connection,
    symbol: str,
    source: str,
    since: pd.Timestamp | None = None,
    lookback: int = 0,
) -> pd.DataFrame:
    """Bars of ``symbol`` in time order, from ``lookback`` bars before ``since`` (all if None)."""
    table = market_data
    # Microseconds as a number: building datetimes row by row cost more than the query.
    epoch_us = sa.cast(sa.extract("epoch", table.c.timestamp) * 1_000_000, sa.BigInteger)
    query = sa.select(epoch_us, *[table.c[name] for name in BAR_VALUE_COLUMNS]).where(
        table.c.symbol == symbol, table.c.source == source
    )
    if since is not None and lookback > 0:
        # The lookback-th bar before `since`, found on the (symbol, timestamp) index; with
        # fewer bars than that before it, the window starts at the first bar.
        window_start = (
            sa.select(table.c.timestamp)
            .where(table.c.symbol == symbol, table.c.source == source, table.c.timestamp < since)
            .order_by(table.c.timestamp.desc())
            .offset(lookback - 1)
            .limit(1)
            .scalar_subquery()
        )
        query = query.where(sa.or_(window_start.is_(None), table.c.timestamp >= window_start))
    elif since is not None:
        query = query.where(table.c.timestamp >= since)
    # Plain tuples: numpy probes Row objects attribute by attribute, which is slow.
    rows = [tuple(row) for row in conn.execute(query.order_by(table.c.timestamp))]
    values = np.array(rows, dtype=np.float64).reshape(len(rows), 1 + len(BAR_VALUE_COLUMNS))
    index = pd.to_datetime(values[:, 0].astype(np.int64), unit="us", utc=True).as_unit("ns")
    return pd.DataFrame(values[:, 1:], index=index.rename("timestamp"), columns=BAR_VALUE_COLUMNS)
