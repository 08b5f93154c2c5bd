"""Checks of the stored bars, one evaluation per symbol partition."""

from typing import Any

import pandas as pd

from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.defs.resources import PostgresResource
from mltrading_assets.lib.symbol_checks import (
    ERROR,
    WARN,
    Results,
    by_symbol,
    per_symbol,
    symbol_check,
)
from mltrading_assets.trading_calendar import NEW_YORK, is_in_regular_session, sessions_between


def ohlc_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    frame = by_symbol(
        database,
        "count(*) AS bars, count(*) FILTER (WHERE NOT ("
        " low > 0 AND low <= LEAST(open, close) AND GREATEST(open, close) <= high)) AS bad",
        symbols,
        source,
    )
    return per_symbol(
        symbols, frame, lambda r: (r.bad == 0, {"bars": int(r.bars), "bad_bars": int(r.bad)})
    )


def duplicate_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    # Two bars starting within the same hour are the same bar twice (e.g. 9:30 and 9:31).
    frame = by_symbol(
        database,
        "count(*) - count(DISTINCT date_trunc('hour', \"timestamp\" - interval '30 minutes'))"
        " AS duplicates",
        symbols,
        source,
    )
    return per_symbol(
        symbols, frame, lambda r: (r.duplicates == 0, {"duplicate_bars": int(r.duplicates)})
    )


def gap_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    frame = by_symbol(
        database,
        'min("timestamp") AS first, max("timestamp") AS last, '
        "array_agg(DISTINCT (\"timestamp\" AT TIME ZONE 'America/New_York')::date) AS days",
        symbols,
        source,
    )

    def judge(row) -> tuple[bool, dict[str, Any]]:
        sessions = sessions_between(pd.Timestamp(row.first), pd.Timestamp(row.last)).index
        have = {pd.Timestamp(day) for day in row.days}
        missing = [day for day in sessions if day not in have]
        metadata = {"sessions": len(sessions), "missing_sessions": len(missing)}
        if missing:
            metadata["first_missing"] = ", ".join(f"{d:%Y-%m-%d}" for d in missing[:10])
        return not missing, metadata

    return per_symbol(symbols, frame, judge)


def freshness_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    market_open = bool(is_in_regular_session(pd.DatetimeIndex([now]))[0])
    frame = by_symbol(database, 'max("timestamp") AS newest', symbols, source)

    def judge(row) -> tuple[bool, dict[str, Any]]:
        newest = pd.Timestamp(row.newest).tz_convert("UTC")
        age = now - newest
        metadata = {
            "newest_bar": f"{newest.tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York",
            "age_minutes": round(age.total_seconds() / 60, 1),
            "market_open": market_open,
        }
        return (not market_open or age <= pd.Timedelta(hours=1)), metadata

    return per_symbol(symbols, frame, judge)


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
        "Every NYSE session inside the history has bars.",
    ),
    symbol_check(
        market_data,
        "fresh_during_market_hours",
        WARN,
        freshness_problems,
        "While NYSE is open, the newest bar is at most one trading hour old.",
    ),
]
