"""NYSE sessions, holidays and early closes, from exchange-calendars (no Dagster here)."""

from mltrading_assets.trading_calendar.nyse import (
    NEW_YORK,
    bar_ends,
    exchange_of,
    exchange_timezone,
    grid_starts,
    is_in_regular_session,
    market_hours_skip_reason,
    newest_bar_due,
    nyse_calendar,
    off_grid,
    session_close,
    session_open_before,
    sessions_between,
    trading_hours_before,
    warm,
)

__all__ = [
    "NEW_YORK",
    "bar_ends",
    "exchange_of",
    "exchange_timezone",
    "grid_starts",
    "is_in_regular_session",
    "market_hours_skip_reason",
    "newest_bar_due",
    "nyse_calendar",
    "off_grid",
    "session_close",
    "session_open_before",
    "sessions_between",
    "trading_hours_before",
    "warm",
]
