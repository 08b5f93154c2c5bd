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
from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS, INTEGER_COLUMNS


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
    frame = pd.DataFrame(index=features.index)
    frame["symbol"] = symbol
    frame["timestamp"] = features.index
    frame["source"] = source
    for name in FEATURE_BAR_COLUMNS:
        frame[name] = bars.loc[features.index, name]
    for name in ALL_FEATURE_COLUMNS:
        column = features[name] if name in features.columns else np.nan
        frame[name] = column
    frame[ALL_FEATURE_COLUMNS] = frame[ALL_FEATURE_COLUMNS].replace([np.inf, -np.inf], np.nan)
    frame["feature_set"] = feature_set
    frame["feature_version"] = feature_version
    # Rows past the first dirty bar are rewritten even when equal: that marks them current.
    return copy_upsert(
        conn,
        feature_engineered_data,
        frame.reset_index(drop=True),
        only_changed=False,
        integer_columns=frozenset(INTEGER_COLUMNS),
    )
