"""The bar task for one symbol, in four stages: plan the window to ask the source for, fetch
it (again from further back when the source moved the history to a new price basis), write
bars and corporate actions in one transaction, and describe what happened for the UI."""

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.bars import first_bar_time, last_bar_time, write_bars
from mltrading_assets.db.corporate_actions import (
    adjust_closes,
    basis_change,
    dividends_since,
    forget_features,
    rebase_older_bars,
    store_actions,
)
from mltrading_assets.db.gaps import REFILL_WINDOW, missing_hours, remember_gaps
from mltrading_assets.db.upsert import UpsertCounts
from mltrading_assets.names import MetadataKeys
from mltrading_assets.sources import BarSource
from mltrading_assets.trading_calendar import (
    NEW_YORK,
    bar_ends,
    exchange_of,
    grid_starts,
    session_open_before,
)
from mltrading_assets.workers.harness import Worker, WorkSpec, bar_span, run_task

ONE_DAY = dt.timedelta(days=1)
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class Plan:
    """The window to fetch: from ``start`` to ``end`` (the source's now)."""

    end: pd.Timestamp
    start: pd.Timestamp
    # The newest stored bar (None for a new symbol or a full refresh).
    last: pd.Timestamp | None
    exchange: str | None
    # Hours the source left out before, asked for again.
    gaps: pd.DatetimeIndex


@dataclass(frozen=True)
class Fetched:
    bars: pd.DataFrame
    actions: pd.DataFrame
    # Where the fetch started: the plan's start, or further back after a rebase.
    start: pd.Timestamp
    # (factor, reason) when the source moved the whole history to a new price basis.
    rebase: tuple[float, str] | None


@dataclass(frozen=True)
class Written:
    counts: UpsertCounts
    new_actions: pd.DataFrame
    # Gaps asked for again and still not served: now known gaps.
    still_missing: pd.DatetimeIndex
    # Older bars moved to the new basis by a rebase.
    older_rebased: int
    # When each fetched bar ends (a bar ending after ``end`` is still in progress).
    ends: pd.DatetimeIndex


def overlap_start(last: pd.Timestamp, days: int, exchange: str | None) -> pd.Timestamp:
    """Where a refresh starts re-reading: ``days`` before the newest stored bar, and for NYSE
    symbols at least ``days`` sessions before its session. Over a weekend three calendar days
    held one bar of Friday: a silent back-adjustment (seen from two bars before it) or a
    split reported for Thursday was then never seen."""
    start = last - pd.Timedelta(days=days)
    if exchange != "XNYS":
        return start
    earlier = session_open_before(last, days)
    return start if earlier is None else min(start, earlier)


def _served_since(source: BarSource, end: pd.Timestamp, otherwise: pd.Timestamp) -> pd.Timestamp:
    """The oldest bar the source still serves (``otherwise`` when it serves everything)."""
    return end - source.max_history if source.max_history is not None else otherwise


def plan(conn: sa.Connection, spec: WorkSpec, source: BarSource, symbol: str) -> Plan:
    """A new symbol gets ``history_days``; a known one the bars since its newest (re-read for
    an overlap: the newest may have been in progress, and sources revise), reaching back to
    the oldest recent hour the source left out."""
    end = source.now()
    last = None if spec.full_refresh else last_bar_time(conn, symbol, source.name)
    exchange = exchange_of(symbol)
    if last is None:
        start = end - pd.Timedelta(days=spec.history_days)
    else:
        start = overlap_start(last, spec.overlap_days, exchange)
    gaps = pd.DatetimeIndex([], tz="UTC")
    if last is not None and exchange is not None:
        gaps = missing_hours(
            conn,
            symbol,
            source.name,
            lambda first, until: grid_starts(exchange, first, until),
            max(_served_since(source, end, EPOCH), last - REFILL_WINDOW),
            last,
        )
        if len(gaps):
            start = min(start, gaps[0])
    return Plan(end=end, start=start, last=last, exchange=exchange, gaps=gaps)


def fetch(conn: sa.Connection, source: BarSource, symbol: str, window: Plan) -> Fetched:
    """Ask the source for the window; if its bars show the history on a new basis (a split
    applied backwards), ask again for everything it serves."""
    bars, actions = source.fetch_with_actions(symbol, window.start, window.end)
    if window.last is None:
        return Fetched(bars, actions, window.start, None)
    rebase = basis_change(conn, symbol, source.name, bars, actions, window.last)
    conn.rollback()
    if rebase is None:
        return Fetched(bars, actions, window.start, None)
    first = first_bar_time(conn, symbol, source.name)
    start = max(first, _served_since(source, window.end, first))
    conn.rollback()
    bars, actions = source.fetch_with_actions(symbol, start, window.end)
    return Fetched(bars, actions, start, rebase)


def write(
    conn: sa.Connection, source: BarSource, symbol: str, window: Plan, got: Fetched
) -> Written:
    """Bars, corporate actions, known gaps and dividend-adjusted closes, in one transaction."""
    bars = got.bars
    ends = bar_ends(bars.index, window.exchange)
    with conn.begin():
        older = 0
        if got.rebase is not None:
            older = rebase_older_bars(
                conn, symbol, source.name, got.start, got.rebase[0], source.split_adjusts_volume
            )
            forget_features(conn, symbol, source.name)
        # adj_close is ours: close adjusted for the dividends paid after the bar.
        counts = write_bars(
            conn,
            symbol,
            source.name,
            bars.assign(adj_close=bars["close"]),
            in_progress=ends > window.end,
        )
        new_actions = store_actions(conn, symbol, source.name, got.actions)
        # Asked again and still not there: a known gap, not fetched again every run.
        still_missing = window.gaps.difference(bars.index) if len(window.gaps) else window.gaps
        remember_gaps(conn, symbol, source.name, still_missing)
        if len(bars) and (
            got.rebase is not None
            or dividends_since(conn, symbol, source.name, _ny_date(bars.index[0]) - ONE_DAY)
        ):
            adjust_closes(conn, symbol, source.name)
    return Written(counts, new_actions, still_missing, older, ends)


def _ny_date(moment: pd.Timestamp) -> dt.date:
    return moment.tz_convert(NEW_YORK).date()


def _new_york(moment: pd.Timestamp) -> str:
    return f"{moment.tz_convert(NEW_YORK):%Y-%m-%d %H:%M}"


def describe(
    symbol: str, source_name: str, window: Plan, got: Fetched, done: Written
) -> dict[str, Any]:
    """The partition's metadata: counts, span, and a sentence for anything unusual."""
    bars = got.bars
    details = {
        "source": source_name,
        "bars_fetched": len(bars),
        MetadataKeys.ROWS_WRITTEN: done.counts.written,
        "rows_inserted": done.counts.inserted,
        "rows_updated": done.counts.updated,
        "incremental": window.last is not None,
        **bar_span(bars.index),
    }
    missing = done.still_missing
    if len(window.gaps):
        details["gaps_filled"] = len(window.gaps) - len(missing)
        if len(missing):
            details["known_gaps_added"] = ", ".join(_new_york(t) for t in missing[:10]) + (
                f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
            )
    if len(done.new_actions):
        details["new_corporate_actions"] = ", ".join(
            f"{r.kind} {r.value:g} on {r.ex_date}" for r in done.new_actions.itertuples(index=False)
        )
    if len(bars) and done.ends[-1] > window.end:
        details["in_progress_bar"] = (
            f"{_new_york(bars.index[-1])} New York, partial "
            f"until {done.ends[-1].tz_convert(NEW_YORK):%H:%M}: rewritten when complete"
        )
    if got.rebase is not None:
        factor, reason = got.rebase
        details[MetadataKeys.REBASED] = (
            f"history re-based by 1/{factor:.6g}: {reason}; {len(bars)} bars re-fetched "
            f"from {got.start:%Y-%m-%d}, {done.older_rebased} older bars adjusted; "
            "features recomputed"
        )
    if bars.empty:
        # Not an error (the source knows the symbol) and not a silent success either.
        details[MetadataKeys.NO_BARS] = (
            f"{source_name} has no bars for {symbol} from {got.start:%Y-%m-%d %H:%M} to "
            f"{window.end:%Y-%m-%d %H:%M} UTC (no trading in that window?)"
        )
    return details


def load_bars(worker: Worker, symbol: str) -> dict[str, Any]:
    source = worker.source
    # One checkout per symbol; no transaction stays open while the source is asked, which
    # can take seconds.
    with worker.engine.connect() as conn, worker.slots_on(conn):
        window = plan(conn, worker.spec, source, symbol)
        conn.rollback()
        got = fetch(conn, source, symbol, window)
        done = write(conn, source, symbol, window, got)
    return describe(symbol, source.name, window, got, done)


def load_market_data(symbol: str) -> dict[str, Any]:
    """Fetch the missing bars of ``symbol`` (plus an overlap) and upsert them."""
    return run_task(symbol, load_bars)
