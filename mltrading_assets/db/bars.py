"""Reading and writing ``market_data``."""

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
    frame = bars[BAR_VALUE_COLUMNS].copy()
    frame.insert(0, "timestamp", bars.index)
    frame.insert(0, "source", source)
    frame.insert(0, "symbol", symbol)
    frame = frame[["symbol", "timestamp", "source", *BAR_VALUE_COLUMNS]]
    return copy_upsert(conn, market_data, frame)


def read_bars(
    conn: sa.Connection,
    symbol: str,
    source: str,
    since: pd.Timestamp | None = None,
    lookback: int = 0,
) -> pd.DataFrame:
    """Bars of ``symbol`` in time order, from ``lookback`` bars before ``since`` (all if None)."""
    table = market_data
    query = sa.select(table.c.timestamp, *[table.c[name] for name in BAR_VALUE_COLUMNS]).where(
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
    rows = conn.execute(query.order_by(table.c.timestamp)).all()
    frame = pd.DataFrame(rows, columns=["timestamp", *BAR_VALUE_COLUMNS])
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(frame.pop("timestamp"), utc=True), name="timestamp"
    )
    return frame.astype("float64")
