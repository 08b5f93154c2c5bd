"""Reading the state of, and writing, ``feature_engineered_data``."""

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.gaps import REFILL_WINDOW
from mltrading_assets.db.tables import FEATURE_BAR_COLUMNS, feature_engineered_data
from mltrading_assets.db.upsert import UpsertCounts, copy_upsert
from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS

# Bars change only inside the refresh overlap and the gap refill window (days back) or when
# they are new, and a rebase forgets a symbol's features, so bar-by-bar comparison is
# limited to the recent window: over the whole history it cost ~9 ms a symbol and grew with
# it. The whole history is still compared whenever the window's bars and feature rows
# disagree in number; older revisions (a manual UPDATE) are picked up by rebuild_all_job.
RECENT_WINDOW = REFILL_WINDOW


# Two statements, compiled once: built with SQLAlchemy constructs on every call they cost
# ~5 ms of Python per symbol for ~1 ms of work in PostgreSQL. Two, not one: the window's
# start bound as a value, not a subquery, lets the planner see how narrow the comparison is.
#
# Stale rows: every write rewrites from the first dirty bar to the newest bar with the
# writer's feature set and version, and rows before that bar were current already, so after
# any write all rows are alike; the newest row tells whether they are stale, and then
# everything is, from the first row (one index probe instead of reading every row).
# MATERIALIZED: inlined, PostgreSQL planned and ran the probes once per use of `ends` (six
# times; 1.3 ms of planning and 0.3 of execution against 0.2 and 0.1, at 10,000 symbols).
_COMPARE_FROM = sa.text(
    """
    WITH ends AS MATERIALIZED (
        -- Index probes: the symbol's newest and oldest feature rows, and its first bar.
        SELECT
            (SELECT max("timestamp") FROM public.feature_engineered_data
             WHERE symbol = :symbol AND source = :source) AS newest,
            (SELECT min("timestamp") FROM public.feature_engineered_data
             WHERE symbol = :symbol AND source = :source) AS oldest,
            (SELECT min("timestamp") FROM public.market_data
             WHERE symbol = :symbol AND source = :source) AS first_bar
    )
    SELECT
        -- As many bars as feature rows in the window up to the newest feature row: only
        -- the window can hold a new or changed bar; otherwise compare the whole history.
        CASE WHEN ends.newest IS NOT NULL AND (
            SELECT count(*) FROM public.feature_engineered_data
            WHERE symbol = :symbol AND source = :source
              AND "timestamp" >= ends.newest - :recent_window
        ) = (
            SELECT count(*) FROM public.market_data
            WHERE symbol = :symbol AND source = :source
              AND "timestamp" >= ends.newest - :recent_window
              AND "timestamp" <= ends.newest
        ) THEN ends.newest - :recent_window ELSE ends.first_bar END AS since,
        (SELECT ends.oldest FROM public.feature_engineered_data AS newest_row
         WHERE newest_row.symbol = :symbol AND newest_row.source = :source
           AND newest_row."timestamp" = ends.newest
           AND (newest_row.feature_version <> :feature_version
                OR newest_row.feature_set <> :feature_set)) AS stale_from
    FROM ends
    """
)
_FIRST_CHANGED = sa.text(
    """
    SELECT min(m."timestamp")
    FROM public.market_data AS m
    LEFT JOIN public.feature_engineered_data AS f
      ON f.symbol = m.symbol AND f.source = m.source AND f."timestamp" = m."timestamp"
     AND f.symbol = :symbol AND f.source = :source AND f."timestamp" >= :since
    WHERE m.symbol = :symbol AND m.source = :source AND m."timestamp" >= :since
      AND (f.symbol IS NULL OR m.updated_at > f.updated_at)
    """
)


def first_dirty_bar(
    conn: sa.Connection, symbol: str, source: str, feature_set: str, feature_version: str
) -> pd.Timestamp | None:
    """The earliest bar whose features are missing or stale, or None when all are current.

    Stale: the bar changed after its features were written, or they came from another
    feature set or formula version.
    """
    key = {"symbol": symbol, "source": source}
    bounds = conn.execute(
        _COMPARE_FROM,
        {
            **key,
            "feature_set": feature_set,
            "feature_version": feature_version,
            "recent_window": RECENT_WINDOW.to_pytimedelta(),
        },
    ).one()
    if bounds.since is None:  # no bars
        return None
    changed = conn.execute(_FIRST_CHANGED, {**key, "since": bounds.since}).scalar_one()
    found = [pd.Timestamp(t).tz_convert("UTC") for t in (changed, bounds.stale_from) if t]
    return min(found, default=None)


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
    # By position, one column at a time: in pandas 3 a label lookup of rows and columns
    # (``.loc``, ``reindex``) cost several times the arithmetic it fed.
    rows = bars.index.get_indexer(index)
    if (rows < 0).any():
        raise ValueError(f"{symbol}: features for bars not given, e.g. {index[rows < 0][0]}")
    values = {name: bars[name].to_numpy(dtype=np.float64)[rows] for name in FEATURE_BAR_COLUMNS}
    matrix = features.to_numpy(dtype=np.float64)
    if np.isinf(matrix).any():
        matrix = np.where(np.isinf(matrix), np.nan, matrix)
    # Columns of the other feature set are NULL.
    absent = np.full(len(index), np.nan)
    for name, column in zip(
        ALL_FEATURE_COLUMNS, features.columns.get_indexer(ALL_FEATURE_COLUMNS), strict=True
    ):
        values[name] = matrix[:, column] if column >= 0 else absent
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
