"""Splits and dividends, and what they do to stored bars: re-basing and ``adj_close``.

Prices in ``market_data`` are on the source's current basis: Yahoo back-adjusts intraday
prices for splits (not for dividends). When a split appears, every stored bar must move to
the new basis at once, or returns and moving averages straddle two bases. ``adj_close`` is
``close`` adjusted for the dividends paid after the bar (the back-adjustment Yahoo applies
to daily bars), so total-return series can be built from hourly bars too.
"""

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.db.tables import corporate_actions

# Overlap bars whose stored/fetched close ratios agree this closely share one factor, beyond
# what the rounding of both prices explains.
_SAME_RATIO = 1e-6
# Yahoo sends prices rounded to 4 decimals: each of the two closes is off by up to half that.
_HALF_A_TICK = 5e-5
# A factor this far from 1 is a change of basis, not a revision of a few prices.
_BASIS_CHANGE = 1e-3


def store_actions(
    conn: sa.Connection, symbol: str, source: str, actions: pd.DataFrame
) -> pd.DataFrame:
    """Insert actions not stored yet; returns the ones that were new."""
    if actions.empty:
        return actions
    rows = [
        {"symbol": symbol, "source": source, "ex_date": r.ex_date, "kind": r.kind, "value": r.value}
        for r in actions.itertuples(index=False)
    ]
    statement = (
        postgresql.insert(corporate_actions)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(corporate_actions.c.ex_date, corporate_actions.c.kind)
    )
    new = {(row.ex_date, row.kind) for row in conn.execute(statement)}
    mask = [(r.ex_date, r.kind) in new for r in actions.itertuples(index=False)]
    return actions[mask]


def stored_split_dates(conn: sa.Connection, symbol: str, source: str) -> set[dt.date]:
    rows = conn.execute(
        sa.select(corporate_actions.c.ex_date).where(
            corporate_actions.c.symbol == symbol,
            corporate_actions.c.source == source,
            corporate_actions.c.kind == "split",
        )
    )
    return {row.ex_date for row in rows}


# Plain rows, not pandas.read_sql: for the ~20 overlap bars of an hourly refresh the frame
# machinery cost more than the query, every symbol of every tick.
_STORED_CLOSES = sa.text(
    'SELECT "timestamp", close FROM public.market_data WHERE symbol = :symbol '
    'AND source = :source AND "timestamp" >= :first AND "timestamp" < :newest '
    'ORDER BY "timestamp"'
)


def basis_change(
    conn: sa.Connection,
    symbol: str,
    source: str,
    fetched: pd.DataFrame,
    actions: pd.DataFrame,
    newest_stored: pd.Timestamp,
) -> tuple[float, str] | None:
    """The factor (stored / source prices) by which the stored history is off the source's
    basis, and why; None when it is on it.

    A split the source reports that is not stored yet moves the basis by its ratio. Without
    one, the oldest bars of the overlap all off by one constant factor (the rest on the
    source's prices) are a back-adjustment the source made silently. The newest stored bar
    may have been in progress: not compared.
    """
    splits = actions[actions["kind"] == "split"] if len(actions) else actions
    if len(splits):
        # Only a reported split needs the stored ones: most refreshes skip the query.
        splits = splits[~splits["ex_date"].isin(stored_split_dates(conn, symbol, source))]
    if len(splits):
        ratio = float(np.prod(splits["value"].to_numpy()))
        events = ", ".join(
            f"{v:g}:1 on {d}" for d, v in zip(splits.ex_date, splits.value, strict=True)
        )
        return ratio, f"split {events} reported by the source"
    overlap = fetched.index[(fetched.index < newest_stored)]
    if len(overlap) < 2:
        return None
    rows = conn.execute(
        _STORED_CLOSES,
        {
            "symbol": symbol,
            "source": source,
            "first": overlap[0].to_pydatetime(),
            "newest": newest_stored.to_pydatetime(),
        },
    ).all()
    if len(rows) < 2:
        return None
    stored_at = pd.DatetimeIndex([row[0] for row in rows]).tz_convert("UTC").as_unit("ns")
    stored_close = np.array([row[1] for row in rows], dtype=np.float64)
    # The overlap is the start of the fetched bars (sorted): a position in one is one in both.
    _, in_stored, in_fetched = np.intersect1d(
        stored_at.asi8, overlap.as_unit("ns").asi8, assume_unique=True, return_indices=True
    )
    if len(in_stored) < 2:
        return None
    fetched_close = fetched["close"].to_numpy()[in_fetched]
    ratios = stored_close[in_stored] / fetched_close
    off = np.abs(ratios - 1) > _BASIS_CHANGE
    # The bars off the source's basis must be the oldest ones (bars stored after the source
    # moved are already on it), at least two, and all off by the same factor.
    leading = int(np.argmin(off)) if not off.all() else len(off)
    if leading < 2 or off[leading:].any():
        return None
    factor = float(np.median(ratios[:leading]))
    # stored ≈ factor × fetched, each rounded: |stored − factor × fetched| ≤ half a tick
    # × (1 + factor), so the ratios of a $60 price split 3:1 may differ by 1.1e-6.
    rounding = _HALF_A_TICK * (1 + factor) / (factor * np.abs(fetched_close[:leading]))
    if np.all(np.abs(ratios[:leading] / factor - 1) <= _SAME_RATIO + rounding):
        return factor, (
            f"the {leading} oldest overlapping bars are {factor:.6g}x the source's price "
            "(a back-adjustment without an event)"
        )
    return None


def rebase_older_bars(
    conn: sa.Connection,
    symbol: str,
    source: str,
    before: pd.Timestamp,
    factor: float,
    volume_too: bool,
) -> int:
    """Bring stored bars older than ``before`` (the source no longer serves them) to the new
    basis: prices divided by ``factor`` (and volume multiplied, where the source adjusts
    volume too). Returns how many changed."""
    volume = "volume * :f" if volume_too else "volume"
    result = conn.execute(
        sa.text(
            "UPDATE public.market_data SET open = open / :f, high = high / :f, low = low / :f, "
            f"close = close / :f, adj_close = adj_close / :f, volume = {volume}, "
            "updated_at = now() "
            'WHERE symbol = :symbol AND source = :source AND "timestamp" < :before'
        ),
        {"f": factor, "symbol": symbol, "source": source, "before": before.to_pydatetime()},
    )
    return result.rowcount


def forget_features(conn: sa.Connection, symbol: str, source: str) -> None:
    """Drop the symbol's feature rows: computed on the old basis, all are recomputed."""
    conn.execute(
        sa.text(
            "DELETE FROM public.feature_engineered_data WHERE symbol = :symbol AND source = :source"
        ),
        {"symbol": symbol, "source": source},
    )


_ADJ_CLOSE = sa.text(
    """
    WITH dividends AS (
        SELECT a.ex_date,
               1 - a.value / (
                   SELECT m.close FROM public.market_data AS m
                   WHERE m.symbol = a.symbol AND m.source = a.source
                     AND m."timestamp" < (a.ex_date::timestamp AT TIME ZONE 'America/New_York')
                   ORDER BY m."timestamp" DESC LIMIT 1
               ) AS factor
        FROM public.corporate_actions AS a
        WHERE a.symbol = :symbol AND a.source = :source AND a.kind = 'dividend'
    ),
    adjusted AS (
        SELECT m."timestamp", m.close * COALESCE((
            SELECT exp(sum(ln(d.factor))) FROM dividends AS d
            WHERE d.factor > 0
              AND d.ex_date > (m."timestamp" AT TIME ZONE 'America/New_York')::date
        ), 1) AS adj_close
        FROM public.market_data AS m
        WHERE m.symbol = :symbol AND m.source = :source
    )
    UPDATE public.market_data AS m SET adj_close = adjusted.adj_close
    FROM adjusted
    WHERE m.symbol = :symbol AND m.source = :source AND m."timestamp" = adjusted."timestamp"
      AND m.adj_close IS DISTINCT FROM adjusted.adj_close
    """
)


def dividends_since(conn: sa.Connection, symbol: str, source: str, day: dt.date) -> bool:
    return (
        conn.execute(
            sa.text(
                "SELECT 1 FROM public.corporate_actions WHERE symbol = :symbol "
                "AND source = :source AND kind = 'dividend' AND ex_date > :day LIMIT 1"
            ),
            {"symbol": symbol, "source": source, "day": day},
        ).first()
        is not None
    )


def adjust_closes(conn: sa.Connection, symbol: str, source: str) -> int:
    """Set every bar's ``adj_close`` to its close times the product of (1 - dividend / the
    close before its ex-date) over the dividends paid after the bar. ``updated_at`` stays:
    no feature reads ``adj_close``."""
    return conn.execute(_ADJ_CLOSE, {"symbol": symbol, "source": source}).rowcount
