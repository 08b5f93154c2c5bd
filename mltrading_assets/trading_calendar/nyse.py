"""Trading sessions from exchange calendars (holidays and early closes included): NYSE for
the schedules, and each symbol's own exchange for the hourly bar grid."""

from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

NEW_YORK = "America/New_York"
_CALENDAR_START = "1990-01-01"


@lru_cache(maxsize=1)
def nyse_calendar() -> xcals.ExchangeCalendar:
    # Built once per process (~0.25 s): wide enough for the long daily histories users load.
    end = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=366)).strftime("%Y-%m-%d")
    return xcals.get_calendar("XNYS", start=_CALENDAR_START, end=end)


@lru_cache(maxsize=1)
def _session_edges() -> tuple[np.ndarray, np.ndarray]:
    schedule = nyse_calendar().schedule
    opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
    closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
    return opens, closes


def is_in_regular_session(timestamps: pd.DatetimeIndex) -> np.ndarray:
    """True where the bar starts inside the NYSE regular session of a trading day."""
    opens, closes = _session_edges()
    stamps = timestamps.as_unit("ns").asi8
    # The session that opened last at or before each stamp; sessions are sorted and never
    # overlap, so the stamp is in a session exactly when it is before that one's close.
    latest = np.searchsorted(opens, stamps, side="right") - 1
    return (latest >= 0) & (stamps < closes[np.maximum(latest, 0)])


def session_open_before(moment: pd.Timestamp, sessions_back: int) -> pd.Timestamp | None:
    """Open (UTC) of the NYSE session ``sessions_back`` sessions before the last one that
    opened at or before ``moment`` (0: that one); None before the calendar's start. Two
    binary searches: the per-symbol refresh asks this for every symbol of every tick."""
    opens, _ = _session_edges()
    position = int(np.searchsorted(opens, moment.value, side="right")) - 1 - sessions_back
    return pd.Timestamp(int(opens[position]), tz="UTC") if position >= 0 else None


def sessions_between(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The NYSE schedule (columns ``open``, ``close`` in UTC) of sessions from start to end."""
    schedule = nyse_calendar().schedule
    start_day = start.tz_convert(NEW_YORK).tz_localize(None).normalize()
    end_day = end.tz_convert(NEW_YORK).tz_localize(None).normalize()
    return schedule.loc[start_day:end_day, ["open", "close"]]


def session_close(moment: pd.Timestamp) -> pd.Timestamp | None:
    """Close (UTC) of the NYSE session on ``moment``'s New York date; None on a non-trading day."""
    day = moment.tz_convert(NEW_YORK).tz_localize(None).normalize()
    schedule = nyse_calendar().schedule
    if day not in schedule.index:
        return None
    return schedule.at[day, "close"]


def market_hours_skip_reason(tick: pd.Timestamp) -> str | None:
    """Why an hourly market-hours tick should not run, or None if it should.

    Ticks run on trading days up to and including the close: the tick at the close picks up
    the session's last bar; ticks after an early close (13:00) and on holidays are skipped.
    """
    close = session_close(tick)
    local = tick.tz_convert(NEW_YORK)
    if close is None:
        return f"{local:%a %Y-%m-%d} is not an NYSE trading day (weekend or holiday)"
    if tick > close:
        closed_at = close.tz_convert(NEW_YORK)
        return f"{local:%H:%M} is after the {closed_at:%H:%M} NYSE close (early close)"
    return None


# The refresh runs every market hour, so while NYSE is open a symbol's newest bar may be
# up to an hour old and still be fresh.
FRESH_FOR = pd.Timedelta(hours=1)


def newest_bar_due(now: pd.Timestamp) -> pd.Timestamp:
    """The oldest newest-bar that is still fresh at ``now``: an hour before now while NYSE
    is open, else an hour before the last session's close (the session's final bar)."""
    calendar = nyse_calendar()
    minute = now.floor("min")
    reference = minute if calendar.is_open_on_minute(minute) else calendar.previous_close(minute)
    return reference - FRESH_FOR


def trading_hours_before(now: pd.Timestamp, hours: float) -> pd.Timestamp | None:
    """The moment ``hours`` of NYSE trading time before ``now``, or None while NYSE is
    closed: a bar is "N trading hours old" by this clock, so a night or a weekend does not
    age it."""
    calendar = nyse_calendar()
    minute = now.floor("min")
    if not calendar.is_open_on_minute(minute):
        return None
    return calendar.minute_offset(minute, -round(hours * 60))


# Yahoo's ticker suffixes for exchanges with one continuous session a day; no suffix is a US
# listing (NYSE and Nasdaq share the XNYS schedule).
_EXCHANGE_BY_SUFFIX = {
    "L": "XLON", "TO": "XTSE", "DE": "XETR", "F": "XFRA", "PA": "XPAR", "AS": "XAMS",
    "BR": "XBRU", "MI": "XMIL", "MC": "XMAD", "SW": "XSWX", "ST": "XSTO", "OL": "XOSL",
    "CO": "XCSE", "HE": "XHEL", "IR": "XDUB", "LS": "XLIS", "VI": "XWBO", "AX": "XASX",
    "NZ": "XNZE", "SA": "BVMF", "MX": "XMEX", "JO": "XJSE",
}  # fmt: skip


def exchange_of(symbol: str) -> str | None:
    """The exchange calendar whose hourly grid ``symbol``'s bars follow; None when the
    grid is not known (currencies, futures, crypto, unknown suffixes)."""
    if "=" in symbol or symbol.endswith("-USD"):
        return None
    if "." in symbol:
        return _EXCHANGE_BY_SUFFIX.get(symbol.rsplit(".", 1)[1])
    return "XNYS"


def exchange_timezone(symbol: str) -> str | None:
    """The time zone of ``symbol``'s exchange, as Yahoo names it (``exchangeTimezoneName``);
    None when the exchange is not known, indices included (^N225 is quoted in Tokyo)."""
    exchange = None if symbol.startswith("^") else exchange_of(symbol)
    if exchange is None:
        return None
    return NEW_YORK if exchange == "XNYS" else _calendar_timezone(exchange)


@lru_cache(maxsize=16)
def _calendar_timezone(exchange: str) -> str:
    return xcals.get_calendar(exchange).tz.key


@lru_cache(maxsize=16)
def _edges(exchange: str) -> tuple[np.ndarray, np.ndarray]:
    if exchange == "XNYS":
        return _session_edges()
    schedule = xcals.get_calendar(exchange).schedule
    opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
    closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
    return opens, closes


def off_grid(timestamps: pd.DatetimeIndex, exchange: str) -> np.ndarray:
    """True where a bar does not start on the exchange's hourly grid: the session's open and
    every whole hour after it, before the close (9:30 … 15:30 New York on NYSE; 12:30 is the
    last on an early close). Bars outside every session are off it too."""
    opens, closes = _edges(exchange)
    stamps = timestamps.as_unit("ns").asi8
    latest = np.searchsorted(opens, stamps, side="right") - 1
    session = np.maximum(latest, 0)
    inside = (latest >= 0) & (stamps < closes[session])
    hour = np.int64(3_600_000_000_000)
    return ~inside | ((stamps - opens[session]) % hour != 0)


def bar_ends(timestamps: pd.DatetimeIndex, exchange: str | None) -> pd.DatetimeIndex:
    """When each hourly bar ends: an hour after it starts, or at its session's close if
    that is sooner (15:30-16:00, 12:30-13:00 on an early close)."""
    hour_later = timestamps + pd.Timedelta(hours=1)
    if exchange is None or len(timestamps) == 0:
        return hour_later
    opens, closes = _edges(exchange)
    stamps = timestamps.as_unit("ns").asi8
    session = np.maximum(np.searchsorted(opens, stamps, side="right") - 1, 0)
    ends = np.minimum(hour_later.as_unit("ns").asi8, closes[session])
    return pd.DatetimeIndex(ends, tz="UTC")


@lru_cache(maxsize=16)
def _grid(exchange: str) -> np.ndarray:
    """Every hourly bar start (UTC ns) of every session of ``exchange``."""
    opens, closes = _edges(exchange)
    hour = np.int64(3_600_000_000_000)
    per_session = (closes - opens + hour - 1) // hour
    offsets = np.arange(per_session.sum()) - np.repeat(
        np.cumsum(per_session) - per_session, per_session
    )
    return np.repeat(opens, per_session) + offsets * hour


def warm() -> None:
    """Build the NYSE calendar and its hourly grid (~0.5 s) in this process, so that
    processes forked from it find them built instead of each building its own."""
    _grid("XNYS")


def grid_starts(exchange: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """The bar starts of ``exchange``'s sessions from ``first`` to ``last`` inclusive."""
    grid = _grid(exchange)
    lo = np.searchsorted(grid, first.value, side="left")
    hi = np.searchsorted(grid, last.value, side="right")
    return pd.DatetimeIndex(grid[lo:hi], tz="UTC")
