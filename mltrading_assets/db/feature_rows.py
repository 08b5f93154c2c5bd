"""Reading the state of, and writing, ``feature_engineered_data``."""

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.tables import FEATURE_BAR_COLUMNS, feature_engineered_data
from mltrading_assets.db.upsert import UpsertCounts, copy_upsert
from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS

# Bars change only inside the refresh overlap (a few days back) or when they are new, so
# bar-by-bar comparison is limited to the recent window: over the whole history it cost
# ~9 ms a symbol. The whole history is still compared whenever the tables disagree on how
# many bars there are up to the newest feature row; older revisions (a manual UPDATE) are
# picked up by rebuild_all_job.
RECENT_WINDOW = pd.Timedelta(days=10)


# One statement, one round trip, compiled once: built with SQLAlchemy constructs on every
# call it cost ~5 ms of Python per symbol for ~1 ms of work in PostgreSQL.
#
# Stale rows: every write rewrites from the first dirty bar to the newest bar with the
# writer's feature set and version, and rows before that bar were current already, so after
# any write all rows are alike; the newest row tells whether they are stale, and then
# everything is, from the first row (one index probe instead of reading every row).
_FIRST_DIRTY_BAR = sa.text(
    """
    WITH features AS (
        SELECT max("timestamp") AS newest, min("timestamp") AS oldest, count(*) AS rows
        FROM public.feature_engineered_data
        WHERE symbol = :symbol AND source = :source
    ),
    compare_from AS (
        -- As many bars as feature rows up to the newest feature row: only the recent
        -- window can hold a new or changed bar; otherwise compare the whole history.
        SELECT COALESCE(
            CASE WHEN features.rows = (
                SELECT count(*) FROM public.market_data
                WHERE symbol = :symbol AND source = :source
                  AND "timestamp" <= features.newest
            ) THEN features.newest - :recent_window END,
            '-infinity') AS since
        FROM features
    )
    SELECT LEAST(
        (SELECT min(m."timestamp")
         FROM public.market_data AS m
         LEFT JOIN public.feature_engineered_data AS f
           ON f.symbol = m.symbol AND f.source = m.source AND f."timestamp" = m."timestamp"
          AND f."timestamp" >= (SELECT since FROM compare_from)
         WHERE m.symbol = :symbol AND m.source = :source
           AND m."timestamp" >= (SELECT since FROM compare_from)
           AND (f.symbol IS NULL OR m.updated_at > f.updated_at)),
        (SELECT features.oldest
         FROM features, LATERAL (
             SELECT feature_set, feature_version FROM public.feature_engineered_data
             WHERE symbol = :symbol AND source = :source AND "timestamp" = features.newest
         ) AS newest_row
         WHERE newest_row.feature_version <> :feature_version
            OR newest_row.feature_set <> :feature_set)
    )
    """
)


def first_dirty_bar(
    conn: sa.Connection, symbol: str, source: str, feature_set: str, feature_version: str
) -> pd.Timestamp | None:
    """The earliest bar whose features are missing or stale, or None when all are current.

    Stale: the bar changed after its features were written, or they came from another
    feature set or formula version.
    """
    value = conn.execute(
        _FIRST_DIRTY_BAR,
        {
            "symbol": symbol,
            "source": source,
            "feature_set": feature_set,
            "feature_version": feature_version,
            "recent_window": RECENT_WINDOW.to_pytimedelta(),
        },
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
    # Whole blocks, not column by column: pandas' per-column access cost ~3 ms a symbol.
    bar_values = bars.loc[index, FEATURE_BAR_COLUMNS].to_numpy(dtype=np.float64)
    # Columns of the other feature set are NULL.
    # A copy: with every column present, pandas 3 hands back a read-only view.
    feature_values = features.reindex(columns=ALL_FEATURE_COLUMNS).to_numpy(
        dtype=np.float64, copy=True
    )
    feature_values[np.isinf(feature_values)] = np.nan
    values = dict(zip(FEATURE_BAR_COLUMNS, bar_values.T, strict=True))
    values.update(zip(ALL_FEATURE_COLUMNS, feature_values.T, strict=True))
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


def stored_values(
    conn: sa.Connection, symbol: str, source: str, at: pd.Timestamp, columns: list[str]
) -> dict[str, float]:
    """The stored feature ``columns`` of one bar (NaN where NULL or the row is missing)."""
    if not columns:
        return {}
    names = ", ".join(f"COALESCE({c}, 'NaN')" for c in columns if c in ALL_FEATURE_COLUMNS)
    row = conn.execute(
        sa.text(
            f"SELECT {names} FROM public.feature_engineered_data "
            'WHERE symbol = :symbol AND source = :source AND "timestamp" = :at'
        ),
        {"symbol": symbol, "source": source, "at": at.to_pydatetime()},
    ).first()
    return {c: float(row[i]) if row else float("nan") for i, c in enumerate(columns)}


def recent_features(
    conn: sa.Connection, symbol: str, source: str, columns: list[str], bars: int
) -> pd.DataFrame:
    """The stored ``columns`` of the newest ``bars`` feature rows, oldest first (NaN for
    NULL), indexed by bar start in UTC."""
    names = [c for c in columns if c in ALL_FEATURE_COLUMNS]
    rows = conn.execute(
        sa.text(
            f'SELECT "timestamp", {", ".join(names)} FROM public.feature_engineered_data '
            'WHERE symbol = :symbol AND source = :source ORDER BY "timestamp" DESC LIMIT :n'
        ),
        {"symbol": symbol, "source": source, "n": bars},
    ).all()
    frame = pd.DataFrame(rows[::-1], columns=["timestamp", *names]).set_index("timestamp")
    frame.index = pd.to_datetime(frame.index, utc=True)
    return frame.astype(float)
