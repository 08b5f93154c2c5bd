"""Reading the state of, and writing, ``feature_engineered_data``."""

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.tables import (
    FEATURE_BAR_COLUMNS,
    feature_engineered_data,
    market_data,
)
from mltrading_assets.db.upsert import UpsertCounts, copy_upsert
from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS


def first_dirty_bar(
    conn: sa.Connection, symbol: str, source: str, feature_set: str, feature_version: str
) -> pd.Timestamp | None:
    """The earliest bar whose features are missing or stale, or None when all are current.

    Stale: the bar changed after its features were written, or they came from another
    feature set or formula version.
    """
    m, f = market_data, feature_engineered_data
    joined = m.outerjoin(
        f,
        sa.and_(f.c.symbol == m.c.symbol, f.c.timestamp == m.c.timestamp, f.c.source == m.c.source),
    )
    value = conn.execute(
        sa.select(sa.func.min(m.c.timestamp))
        .select_from(joined)
        .where(
            m.c.symbol == symbol,
            m.c.source == source,
            sa.or_(
                f.c.symbol.is_(None),
                m.c.updated_at > f.c.updated_at,
                f.c.feature_version != feature_version,
                f.c.feature_set != feature_set,
            ),
        )
    ).scalar_one()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def write_features(
    conn: sa.Connection,
    symbol: str,
    source: str,
    bars: pd.DataFrame,
    features: pd.DataFrame,
    feature_set: str,
    feature_version: str,
) -> UpsertCounts:
    """Upsert feature rows (NaN/inf stored as NULL) for the bars of ``features.index``."""
    index = features.index
    values = {name: bars.loc[index, name].to_numpy(dtype=float) for name in FEATURE_BAR_COLUMNS}
    for name in ALL_FEATURE_COLUMNS:
        column = features[name].to_numpy(dtype=float) if name in features else np.nan
        values[name] = np.where(np.isinf(column), np.nan, column) * np.ones(len(index))
    # Rows past the first dirty bar are rewritten even when equal: that marks them current.
    return copy_upsert(
        conn,
        feature_engineered_data,
        {
            "symbol": symbol,
            "source": source,
            "feature_set": feature_set,
            "feature_version": feature_version,
        },
        index,
        values,
        only_changed=False,
    )
