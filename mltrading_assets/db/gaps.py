"""Hours of a session without a bar: found against the exchange grid, fetched again while
the source still serves them, and remembered as known once it has confirmed them."""

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.db.tables import known_gaps

# A missing hour is asked for again while it is this recent (about ten sessions): a source
# that left it out may still serve it; searching further back would read more of each
# symbol's history every hour as the history grows.
REFILL_WINDOW = pd.Timedelta(days=14)

# Index probes and counts inside the window only: the whole history is never read.
_COVERAGE = sa.text(
    """
    SELECT (SELECT min("timestamp") FROM public.market_data
            WHERE symbol = :symbol AND source = :source) AS first,
           (SELECT count(*) FROM public.market_data
            WHERE symbol = :symbol AND source = :source
              AND "timestamp" >= :since AND "timestamp" <= :until) AS bars,
           (SELECT count(*) FROM public.known_gaps
            WHERE symbol = :symbol AND source = :source
              AND "timestamp" >= :since AND "timestamp" <= :until) AS known
    """
)

_PRESENT = sa.text(
    """
    SELECT "timestamp" FROM public.market_data
    WHERE symbol = :symbol AND source = :source AND "timestamp" >= :since
      AND "timestamp" <= :until
    UNION ALL
    SELECT "timestamp" FROM public.known_gaps
    WHERE symbol = :symbol AND source = :source AND "timestamp" >= :since
      AND "timestamp" <= :until
    """
)


def missing_hours(
    conn: sa.Connection,
    symbol: str,
    source: str,
    expected_between,
    since: pd.Timestamp,
    until: pd.Timestamp,
) -> pd.DatetimeIndex:
    """Grid hours from ``since`` (or the first stored bar, if later) to ``until`` with no bar
    and no known gap. ``expected_between(first, last)`` gives the grid; one cheap count
    settles the usual case where nothing is missing."""
    params = {
        "symbol": symbol,
        "source": source,
        "since": since.to_pydatetime(),
        "until": until.to_pydatetime(),
    }
    row = conn.execute(_COVERAGE, params).one()
    if row.first is None:
        return pd.DatetimeIndex([], tz="UTC")
    first = max(pd.Timestamp(row.first).tz_convert("UTC"), since)
    expected = expected_between(first, until)
    if row.bars + row.known >= len(expected):
        return pd.DatetimeIndex([], tz="UTC")
    params["since"] = first.to_pydatetime()
    present = pd.DatetimeIndex([r[0] for r in conn.execute(_PRESENT, params)]).tz_convert("UTC")
    return expected.difference(present)


def remember_gaps(conn: sa.Connection, symbol: str, source: str, hours: pd.DatetimeIndex) -> None:
    """Record hours the source was asked for again and still has no bar for."""
    if len(hours) == 0:
        return
    conn.execute(
        postgresql.insert(known_gaps)
        .values(
            [{"symbol": symbol, "source": source, "timestamp": t.to_pydatetime()} for t in hours]
        )
        .on_conflict_do_nothing()
    )
