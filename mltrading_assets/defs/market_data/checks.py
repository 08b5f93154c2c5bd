"""Checks of the stored bars, one evaluation per symbol partition."""

import bisect
import datetime as dt
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from mltrading_assets.db.gaps import REFILL_WINDOW
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.lib.symbol_checks import (
    ERROR,
    WARN,
    Results,
    Scope,
    by_symbol,
    per_symbol,
    query,
    symbol_check,
)
from mltrading_assets.trading_calendar import (
    NEW_YORK,
    exchange_of,
    is_in_regular_session,
    newest_bar_due,
    nyse_calendar,
    sessions_between,
)


def ohlc_problems(database: PostgresResource, scope: Scope) -> Results:
    frame = by_symbol(
        database,
        "count(*) AS bars, count(*) FILTER (WHERE NOT ("
        " low > 0 AND low <= LEAST(open, close) AND GREATEST(open, close) <= high)) AS bad",
        scope,
    )
    return per_symbol(
        scope, frame, lambda r: (r.bad == 0, {"bars": int(r.bars), "bad_bars": int(r.bad)})
    )


def duplicate_problems(database: PostgresResource, scope: Scope) -> Results:
    # Two bars starting within the same hour are the same bar twice (e.g. 9:30 and 9:31).
    frame = by_symbol(
        database,
        "count(*) - count(DISTINCT date_trunc('hour', \"timestamp\" - interval '30 minutes'))"
        " AS duplicates",
        scope,
    )
    return per_symbol(
        scope, frame, lambda r: (r.duplicates == 0, {"duplicate_bars": int(r.duplicates)})
    )


def gap_problems(database: PostgresResource, scope: Scope) -> Results:
    frame = by_symbol(
        database,
        'min("timestamp") AS first, max("timestamp") AS last, '
        "array_agg(DISTINCT (\"timestamp\" AT TIME ZONE 'America/New_York')::date) AS days",
        scope,
    )

    def judge(row) -> tuple[bool, dict[str, Any]]:
        sessions = sessions_between(pd.Timestamp(row.first), pd.Timestamp(row.last)).index
        have = {pd.Timestamp(day) for day in row.days}
        missing = [day for day in sessions if day not in have]
        metadata = {"sessions": len(sessions), "missing_sessions": len(missing)}
        if missing:
            metadata["first_missing"] = ", ".join(f"{d:%Y-%m-%d}" for d in missing[:10])
        return not missing, metadata

    return per_symbol(scope, frame, judge)


def freshness_problems(database: PostgresResource, scope: Scope) -> Results:
    now = scope.now
    market_open = bool(is_in_regular_session(pd.DatetimeIndex([now]))[0])
    # One index probe per symbol, whatever the window: a symbol with no bar in it is stale,
    # not empty.
    frame = query(
        database,
        "SELECT s.symbol, newest.at AS newest FROM unnest(CAST(:symbols AS text[])) AS s(symbol)"
        ' CROSS JOIN LATERAL (SELECT max("timestamp") AS at FROM public.market_data AS m'
        "   WHERE m.symbol = s.symbol AND m.source = :source) AS newest"
        " WHERE newest.at IS NOT NULL",
        symbols=scope.symbols,
        source=scope.source,
    )
    due = newest_bar_due(now)

    def judge(row) -> tuple[bool, dict[str, Any]]:
        newest = pd.Timestamp(row.newest).tz_convert("UTC")
        age = now - newest
        metadata = {
            "newest_bar": f"{newest.tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York",
            "age_minutes": round(age.total_seconds() / 60, 1),
            "market_open": market_open,
        }
        return (not market_open or newest >= due), metadata

    return per_symbol(scope, frame, judge)


_OFF_GRID = """
    WITH sessions AS (
        SELECT unnest(CAST(:days AS date[])) AS day,
               unnest(CAST(:opens AS time[])) AS opens,
               unnest(CAST(:last_starts AS time[])) AS last_start
    ),
    bars AS (
        SELECT symbol, "timestamp", ("timestamp" AT TIME ZONE 'America/New_York') AS local
        FROM public.market_data WHERE symbol = ANY(:symbols) AND source = :source
          AND "timestamp" >= :since
    ),
    judged AS (
        SELECT b.symbol, b."timestamp",
               s.day IS NULL OR b.local::time < s.opens OR b.local::time > s.last_start
               OR extract(epoch FROM b.local::time - s.opens)::bigint % 3600 <> 0 AS off
        FROM bars AS b LEFT JOIN sessions AS s ON s.day = b.local::date
    )
    SELECT symbol, count(*) FILTER (WHERE off) AS off_grid,
           (array_agg("timestamp" ORDER BY "timestamp") FILTER (WHERE off))[1:3] AS examples
    FROM judged GROUP BY symbol
"""


@lru_cache(maxsize=1)
def _nyse_grid() -> dict[str, list]:
    """Every NYSE session's date, open and last bar start (New York wall time)."""
    schedule = nyse_calendar().schedule
    opens = pd.DatetimeIndex(schedule["open"]).tz_convert(NEW_YORK)
    closes = pd.DatetimeIndex(schedule["close"]).tz_convert(NEW_YORK)
    hours = np.ceil((closes - opens) / pd.Timedelta(hours=1)).astype(int) - 1
    last_starts = opens + pd.to_timedelta(hours, unit="h")
    return {
        "days": [d.date() for d in schedule.index],
        "opens": [t.time() for t in opens],
        "last_starts": [t.time() for t in last_starts],
    }


def _window_of(calendar: dict[str, list], key: str, first) -> dict[str, list]:
    """The sessions of ``calendar`` (sorted by ``key``) from ``first`` on. A check judges a
    window of weeks; the whole calendar is every session since 1990 (~9,300), which each
    statement sent as arrays for PostgreSQL to parse: ~0.5 s of a 500-symbol check."""
    start = bisect.bisect_left(calendar[key], first)
    return {name: values[start:] for name, values in calendar.items()}


def _nyse_only(scope: Scope, judge_nyse) -> Results:
    """``judge_nyse`` over the NYSE-listed symbols; the others pass, saying so (their bars
    are checked against their own exchange's grid when they are loaded)."""
    results = judge_nyse([s for s in scope.symbols if exchange_of(s) == "XNYS"])
    not_nyse = (True, {"checked": "not an NYSE symbol"})
    return {s: results.get(s, not_nyse) for s in scope.symbols}


def off_grid_problems(database: PostgresResource, scope: Scope) -> Results:
    def judge(row) -> tuple[bool, dict[str, Any]]:
        metadata: dict[str, Any] = {"off_grid_bars": int(row.off_grid)}
        if row.off_grid:
            metadata["examples"] = ", ".join(
                f"{pd.Timestamp(t).tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York"
                for t in row.examples
            )
        return row.off_grid == 0, metadata

    def judge_nyse(nyse: list[str]) -> Results:
        frame = query(
            database,
            _OFF_GRID,
            symbols=nyse,
            source=scope.source,
            since=scope.since,
            # A bar since `since` starts on its New York date or the next.
            **_window_of(_nyse_grid(), "days", (scope.since - dt.timedelta(days=1)).date()),
        )
        return per_symbol(scope, frame, judge, nyse)

    return _nyse_only(scope, judge_nyse)


_MISSING = """
    WITH sessions AS (
        SELECT unnest(CAST(:session_opens AS timestamptz[])) AS opens,
               unnest(CAST(:session_closes AS timestamptz[])) AS closes
    ),
    spans AS (
        SELECT symbol, min("timestamp") AS first, max("timestamp") AS last
        FROM public.market_data WHERE symbol = ANY(:symbols) AND source = :source
          AND "timestamp" >= :since
        GROUP BY symbol
    ),
    expected AS (
        SELECT sp.symbol, g.hour
        FROM spans AS sp
        JOIN sessions AS s ON s.closes > sp.first AND s.opens <= sp.last
        CROSS JOIN LATERAL generate_series(
            s.opens, s.closes - interval '1 microsecond', interval '1 hour') AS g(hour)
        WHERE g.hour BETWEEN sp.first AND sp.last
    ),
    missing AS (
        SELECT e.symbol, e.hour FROM expected AS e
        -- The window's bounds repeated: planned as an anti-join, the lookup would
        -- otherwise read every bar of the table.
        WHERE NOT EXISTS (
            SELECT 1 FROM public.market_data AS m WHERE m.symbol = e.symbol
              AND m.source = :source AND m."timestamp" = e.hour
              AND m.symbol = ANY(:symbols) AND m."timestamp" >= :since)
          AND NOT EXISTS (
            SELECT 1 FROM public.known_gaps AS k WHERE k.symbol = e.symbol
              AND k.source = :source AND k."timestamp" = e.hour
              AND k.symbol = ANY(:symbols) AND k."timestamp" >= :since)
    )
    SELECT sp.symbol,
           (SELECT count(*) FROM missing AS x WHERE x.symbol = sp.symbol) AS missing,
           (SELECT count(*) FROM missing AS x WHERE x.symbol = sp.symbol
              AND x.hour < :final_before) AS final,
           ARRAY(SELECT x.hour FROM missing AS x WHERE x.symbol = sp.symbol
                 ORDER BY x.hour LIMIT 5) AS examples,
           (SELECT count(*) FROM public.known_gaps AS k
            WHERE k.symbol = sp.symbol AND k.source = :source
              AND k."timestamp" >= :since) AS known
    FROM spans AS sp
"""
# A missing hour this old was asked for by many refreshes already: it will not come.
FINAL_AFTER = REFILL_WINDOW


@lru_cache(maxsize=1)
def _nyse_sessions() -> dict[str, list]:
    schedule = nyse_calendar().schedule
    return {
        "session_opens": [t.to_pydatetime() for t in schedule["open"]],
        "session_closes": [t.to_pydatetime() for t in schedule["close"]],
    }


def missing_bar_problems(database: PostgresResource, scope: Scope) -> Results:
    def judge(row) -> tuple:
        metadata: dict[str, Any] = {
            "missing_hours": int(row.missing),
            "known_gaps": int(row.known),
        }
        if row.missing:
            metadata["first_missing"] = ", ".join(
                f"{pd.Timestamp(t).tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York"
                for t in row.examples
            )
        # Recent holes are filled by the next refreshes (WARN); old ones are final (ERROR).
        return row.missing == 0, metadata, ERROR if row.final else WARN

    def judge_nyse(nyse: list[str]) -> Results:
        frame = query(
            database,
            _MISSING,
            symbols=nyse,
            source=scope.source,
            since=scope.since,
            final_before=(scope.now - FINAL_AFTER).to_pydatetime(),
            # A session that closed before `since` holds none of the window's hours.
            **_window_of(_nyse_sessions(), "session_closes", scope.since),
        )
        return per_symbol(scope, frame, judge, nyse)

    return _nyse_only(scope, judge_nyse)


market_data_checks = [
    symbol_check(
        market_data,
        "ohlc_sane",
        ERROR,
        ohlc_problems,
        "Every bar has low <= open, close <= high and prices > 0.",
    ),
    symbol_check(
        market_data,
        "no_duplicate_bars",
        ERROR,
        duplicate_problems,
        "No two bars of a symbol start within the same hour.",
    ),
    symbol_check(
        market_data,
        "no_session_gaps",
        ERROR,
        gap_problems,
        "Every NYSE session inside the checked window (processing.check_window_days) has bars.",
    ),
    symbol_check(
        market_data,
        "no_missing_bars",
        ERROR,
        missing_bar_problems,
        "Every hour of every NYSE session inside the checked window is a bar or a known gap "
        "(an hour the source confirmed it has no bar for); WARN while a hole may still be "
        f"filled, ERROR once it is older than {FINAL_AFTER.days} days.",
    ),
    symbol_check(
        market_data,
        "bars_on_grid",
        ERROR,
        off_grid_problems,
        "Every bar starts on the NYSE hourly grid of its session: 9:30, 10:30 … 15:30 New "
        "York (12:30 last on an early close), never on a holiday.",
    ),
    symbol_check(
        market_data,
        "fresh_during_market_hours",
        WARN,
        freshness_problems,
        "While NYSE is open, the newest bar is at most one trading hour old.",
    ),
]
