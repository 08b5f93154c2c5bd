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

# Bars change only inside the refresh overlap (a few days back) or when they are new, so
# bar-by-bar comparison is limited to the recent window: over the whole history it cost
# ~9 ms a symbol. The whole history is still compared whenever the tables disagree on how
# many bars there are up to the newest feature row; older revisions (a manual UPDATE) are
# picked up by rebuild_all_job.
RECENT_WINDOW = pd.Timedelta(days=10)


def _timestamp(value) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def first_dirty_bar(
    conn: sa.Connection, symbol: str, source: str, feature_set: str, feature_version: str
) -> pd.Timestamp | None:
    """The earliest bar whose features are missing or stale, or None when all are current.

    Stale: the bar changed after its features were written, or they came from another
    feature set or formula version.
    """
    m, f = market_data, feature_engineered_data

    def of_symbol(table: sa.Table) -> sa.ColumnElement:
        return sa.and_(table.c.symbol == symbol, table.c.source == source)

    newest = sa.select(sa.func.max(f.c.timestamp)).where(of_symbol(f)).scalar_subquery()
    state = conn.execute(
        sa.select(
            newest.label("newest"),
            sa.select(sa.func.count())
            .select_from(m)
            .where(of_symbol(m), m.c.timestamp <= newest)
            .scalar_subquery()
            .label("bars"),
            sa.select(sa.func.count())
            .select_from(f)
            .where(of_symbol(f))
            .scalar_subquery()
            .label("rows"),
            sa.select(sa.func.min(f.c.timestamp))
            .where(
                of_symbol(f),
                sa.or_(f.c.feature_version != feature_version, f.c.feature_set != feature_set),
            )
            .scalar_subquery()
            .label("stale_from"),
        )
    ).one()
    newest_feature = _timestamp(state.newest)
    complete = newest_feature is not None and state.bars == state.rows
    joined = m.outerjoin(
        f,
        sa.and_(f.c.symbol == m.c.symbol, f.c.timestamp == m.c.timestamp, f.c.source == m.c.source),
    )
    query = (
        sa.select(sa.func.min(m.c.timestamp))
        .select_from(joined)
        .where(of_symbol(m), sa.or_(f.c.symbol.is_(None), m.c.updated_at > f.c.updated_at))
    )
    if complete:
        query = query.where(m.c.timestamp >= newest_feature - RECENT_WINDOW)
    changed = _timestamp(conn.execute(query).scalar_one())
    candidates = [t for t in (changed, _timestamp(state.stale_from)) if t is not None]
    return min(candidates) if candidates else None


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
