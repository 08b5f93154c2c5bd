"""The work for one symbol, as it runs inside an isolated worker process (no Dagster here).

Each worker opens one database connection and builds its source once, in ``init_worker``;
every symbol then runs in its own transaction, so a failure leaves nothing of it written.
"""

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import tenacity

from mltrading_assets.charts import (
    CHART_BARS,
    CHART_COLUMNS,
    chart_markdown,
    feature_chart_png,
    latest_values_markdown,
)
from mltrading_assets.db.bars import first_bar_time, last_bar_time, read_bars, write_bars
from mltrading_assets.db.corporate_actions import (
    adjust_closes,
    basis_change,
    dividends_since,
    forget_features,
    rebase_older_bars,
    store_actions,
)
from mltrading_assets.db.engine import create_app_engine, first_line
from mltrading_assets.db.feature_rows import (
    first_dirty_bar,
    recent_features,
    stored_values,
    write_features,
)
from mltrading_assets.db.gaps import missing_hours, remember_gaps
from mltrading_assets.features import (
    CUMULATIVE_COLUMNS,
    FEATURE_VERSION,
    LOOKBACK_BARS,
    compute_features,
)
from mltrading_assets.sources import (
    BadBarsError,
    InvalidSymbolError,
    SourceError,
    SymbolNotFoundError,
    TransientSourceError,
    build_source,
)
from mltrading_assets.trading_calendar import (
    NEW_YORK,
    bar_ends,
    exchange_of,
    grid_starts,
    sessions_between,
)
from mltrading_assets.workers.isolation import SymbolTaskError
from mltrading_assets.workers.lifeline import die_with_parent

# Metadata key of a bar step that found the symbol but no bars in its window.
NO_BARS_KEY = "no_bars_in_window"
# Metadata key of a bar step that moved the symbol's history to a new price basis.
REBASED_KEY = "rebased"
ONE_DAY = dt.timedelta(days=1)
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class WorkSpec:
    """Everything a worker needs, picklable: built from the run's resources."""

    database_url: str
    source: dict[str, Any]
    history_days: int = 365
    overlap_days: int = 3
    feature_set: str = "core"
    # Reload the whole history and recompute every feature (the rebuild job).
    full_refresh: bool = False
    # Attach a chart and a table of the latest values to each feature materialization.
    charts: bool = True
    # A lost database connection is retried (the symbol from the start, in a new
    # transaction) for this long: a server restart costs retries, not failed symbols.
    database_outage_seconds: float = 60.0
    # Test-only fault injection: {"SYMBOL" or "*": "raise" | "hang" | "kill" | "slow"}.
    faults: dict[str, str] = field(default_factory=dict)


@dataclass
class _Worker:
    spec: WorkSpec
    engine: sa.Engine
    source: Any


_worker: _Worker | None = None


def init_worker(spec: WorkSpec, request_slots: Any = None) -> None:
    """Open this worker's connection and source. ``request_slots`` (``RequestSlots``,
    shared by the step's workers) bound the requests a network source has in flight."""
    global _worker
    die_with_parent()
    _worker = _Worker(
        spec=spec,
        engine=create_app_engine(spec.database_url, pool_size=1),
        source=build_source(**spec.source, request_slots=request_slots),
    )


def _state() -> _Worker:
    if _worker is None:
        raise RuntimeError("symbol work runs only in a worker started with init_worker")
    return _worker


def _inject_fault(symbol: str, spec: WorkSpec) -> None:
    fault = spec.faults.get(symbol, spec.faults.get("*"))
    if fault == "slow":  # keeps symbols in flight long enough to fault the server under them
        time.sleep(0.5)
    if fault == "raise":
        raise RuntimeError(f"injected failure for {symbol}")
    if fault == "hang":
        time.sleep(3600)
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _classified(symbol: str, exc: Exception) -> SymbolTaskError:
    if isinstance(exc, BadBarsError | InvalidSymbolError | SymbolNotFoundError):
        return SymbolTaskError("bad_input", str(exc))
    if isinstance(exc, TransientSourceError):
        return SymbolTaskError("transient", str(exc))
    if isinstance(exc, SourceError):
        return SymbolTaskError("bad_input", str(exc))
    if isinstance(exc, sa.exc.DBAPIError):
        return SymbolTaskError(
            "error", f"{symbol}: database error, nothing written: {first_line(exc)}"
        )
    return SymbolTaskError("error", f"{symbol}: {type(exc).__name__}: {exc}")


def connection_lost(exc: BaseException) -> bool:
    """The server went away (restart, crash, network): the transaction was rolled back."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def _run(symbol: str, body) -> dict[str, Any]:
    worker = _state()
    started = time.perf_counter()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(connection_lost),
        stop=tenacity.stop_after_delay(worker.spec.database_outage_seconds),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
        reraise=True,
    )
    try:
        _inject_fault(symbol, worker.spec)
        details = retrying(body, worker, symbol)
    except SymbolTaskError:
        raise
    except Exception as exc:
        if connection_lost(exc):
            raise SymbolTaskError(
                "database",
                f"{symbol}: database unreachable for {worker.spec.database_outage_seconds:g} s, "
                f"nothing written: {first_line(exc)}",
            ) from None
        raise _classified(symbol, exc) from None
    retries = retrying.statistics.get("attempt_number", 1) - 1
    if retries:
        details["database_retries"] = retries
    details["duration_s"] = round(time.perf_counter() - started, 4)
    return details


def _bar_span(index: pd.DatetimeIndex) -> dict[str, Any]:
    if len(index) == 0:
        return {"first_bar": None, "last_bar": None}
    return {"first_bar": index[0].isoformat(), "last_bar": index[-1].isoformat()}


def overlap_start(last: pd.Timestamp, days: int, exchange: str | None) -> pd.Timestamp:
    """Where a refresh starts re-reading: ``days`` before the newest stored bar, and for NYSE
    symbols at least ``days`` sessions before its session. Over a weekend three calendar days
    held one bar of Friday: a silent back-adjustment (seen from two bars before it) or a
    split reported for Thursday was then never seen."""
    start = last - pd.Timedelta(days=days)
    if exchange != "XNYS":
        return start
    sessions = sessions_between(last - pd.Timedelta(days=days + 14), last)
    sessions = sessions[sessions["open"] <= last]
    if len(sessions) > days:
        start = min(start, sessions["open"].iloc[-1 - days])
    return start


def _load_bars(worker: _Worker, symbol: str) -> dict[str, Any]:
    spec, source = worker.spec, worker.source
    end = source.now()
    rebase: tuple[float, str] | None = None
    # One checkout (and one pre-ping) per symbol; no transaction stays open while the
    # source is asked, which can take seconds.
    with worker.engine.connect() as conn:
        last = None if spec.full_refresh else last_bar_time(conn, symbol, source.name)
        exchange = exchange_of(symbol)
        if last is None:
            start = end - pd.Timedelta(days=spec.history_days)
        else:
            # Re-read a few days: the newest bar may have been in progress, and sources
            # revise.
            start = overlap_start(last, spec.overlap_days, exchange)
        gaps = pd.DatetimeIndex([], tz="UTC")
        if last is not None and exchange is not None:
            # Hours the source left out once are asked for again while it still serves them.
            served = end - source.max_history if source.max_history is not None else EPOCH
            gaps = missing_hours(
                conn,
                symbol,
                source.name,
                lambda first, until: grid_starts(exchange, first, until),
                served,
                last,
            )
            if len(gaps):
                start = min(start, gaps[0])
        conn.rollback()
        bars, actions = source.fetch_with_actions(symbol, start, end)
        if last is not None:
            rebase = basis_change(conn, symbol, source.name, bars, actions, last)
            conn.rollback()
        if rebase is not None:
            # The whole history moves to the source's new basis: re-fetch what it serves.
            first = first_bar_time(conn, symbol, source.name)
            served = end - source.max_history if source.max_history is not None else first
            start = max(first, served)
            conn.rollback()
            bars, actions = source.fetch_with_actions(symbol, start, end)
        ends = bar_ends(bars.index, exchange)
        with conn.begin():
            older = 0
            if rebase is not None:
                older = rebase_older_bars(
                    conn, symbol, source.name, start, rebase[0], source.split_adjusts_volume
                )
                forget_features(conn, symbol, source.name)
            # adj_close is ours: close adjusted for the dividends paid after the bar.
            counts = write_bars(
                conn,
                symbol,
                source.name,
                bars.assign(adj_close=bars["close"]),
                in_progress=ends > end,
            )
            new_actions = store_actions(conn, symbol, source.name, actions)
            # Asked again and still not there: a known gap, not fetched again every run.
            still_missing = gaps.difference(bars.index)
            remember_gaps(conn, symbol, source.name, still_missing)
            if len(bars) and (
                rebase is not None
                or dividends_since(conn, symbol, source.name, _ny_date(bars.index[0]) - ONE_DAY)
            ):
                adjust_closes(conn, symbol, source.name)
    details = {
        "source": source.name,
        "bars_fetched": len(bars),
        "rows_written": counts.written,
        "rows_inserted": counts.inserted,
        "rows_updated": counts.updated,
        "incremental": last is not None,
        **_bar_span(bars.index),
    }
    if len(gaps):
        details["gaps_filled"] = len(gaps) - len(still_missing)
        if len(still_missing):
            details["known_gaps_added"] = ", ".join(
                f"{t.tz_convert(NEW_YORK):%Y-%m-%d %H:%M}" for t in still_missing[:10]
            ) + (f" (+{len(still_missing) - 10} more)" if len(still_missing) > 10 else "")
    if len(new_actions):
        details["new_corporate_actions"] = ", ".join(
            f"{r.kind} {r.value:g} on {r.ex_date}" for r in new_actions.itertuples(index=False)
        )
    if len(bars) and ends[-1] > end:
        details["in_progress_bar"] = (
            f"{bars.index[-1].tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York, partial "
            f"until {ends[-1].tz_convert(NEW_YORK):%H:%M}: rewritten when complete"
        )
    if rebase is not None:
        details[REBASED_KEY] = (
            f"history re-based by 1/{rebase[0]:.6g}: {rebase[1]}; {len(bars)} bars re-fetched "
            f"from {start:%Y-%m-%d}, {older} older bars adjusted; features recomputed"
        )
    if bars.empty:
        # Not an error (the source knows the symbol) and not a silent success either.
        details[NO_BARS_KEY] = (
            f"{source.name} has no bars for {symbol} from {start:%Y-%m-%d %H:%M} to "
            f"{end:%Y-%m-%d %H:%M} UTC (no trading in that window?)"
        )
    return details


def _ny_date(moment: pd.Timestamp) -> dt.date:
    return moment.tz_convert(NEW_YORK).date()


def load_market_data(symbol: str) -> dict[str, Any]:
    """Fetch the missing bars of ``symbol`` (plus an overlap) and upsert them."""
    return _run(symbol, _load_bars)


def _compute(worker: _Worker, symbol: str) -> dict[str, Any]:
    spec, source_name = worker.spec, worker.source.name
    feature_set = spec.feature_set
    details: dict[str, Any] = {
        "source": source_name,
        "feature_set": feature_set,
        "feature_version": FEATURE_VERSION,
        "bars_read": 0,
        "rows_written": 0,
    }
    with worker.engine.begin() as conn:
        if spec.full_refresh:
            dirty = first_bar_time(conn, symbol, source_name)
        else:
            dirty = first_dirty_bar(conn, symbol, source_name, feature_set, FEATURE_VERSION)
        if dirty is None:
            if last_bar_time(conn, symbol, source_name) is None:
                raise SymbolNotFoundError(
                    f"{symbol}: no bars from source {source_name!r} in market_data; "
                    "materialize market_data for it first"
                )
            if spec.charts:
                # Nothing new, but this materialization becomes the one the UI shows: it
                # carries the chart and latest values too, drawn from the stored rows.
                stored = recent_features(conn, symbol, source_name, CHART_COLUMNS, CHART_BARS)
                if len(stored):
                    bars = read_bars(conn, symbol, source_name, since=stored.index[0])
                    details.update(_pictures(bars, stored, symbol))
            return details
        bars = read_bars(conn, symbol, source_name, since=dirty, lookback=LOOKBACK_BARS)
        carry = None
        if feature_set == "extended" and len(bars) and bars.index[0] < dirty:
            # Running totals continue from the stored value at the window's first bar; a
            # row without one (written by the core set) means recomputing from the start.
            carry = stored_values(conn, symbol, source_name, bars.index[0], CUMULATIVE_COLUMNS)
            if any(np.isnan(value) for value in carry.values()):
                bars = read_bars(conn, symbol, source_name)
                carry = None
        computed = compute_features(bars, feature_set=feature_set, carry=carry)
        features = computed.loc[computed.index >= dirty]
        counts = write_features(
            conn, symbol, source_name, bars, features, feature_set, FEATURE_VERSION
        )
    details.update(bars_read=len(bars), rows_written=counts.written, **_bar_span(features.index))
    if spec.charts:
        # Drawn after the commit: the picture must never hold the transaction open.
        details.update(_pictures(bars, computed, symbol))
    return details


def _pictures(bars: pd.DataFrame, features: pd.DataFrame, symbol: str) -> dict[str, str]:
    if features.empty:
        return {}
    return {
        "chart": chart_markdown(feature_chart_png(bars, features, symbol), symbol),
        "latest_values": latest_values_markdown(bars, features),
    }


def build_features(symbol: str) -> dict[str, Any]:
    """Recompute the features of every new or changed bar of ``symbol`` and upsert them."""
    return _run(symbol, _compute)
