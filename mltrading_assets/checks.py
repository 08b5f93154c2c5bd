"""Data-quality checks, per symbol partition, for both assets.

Each check runs one SQL query for all the symbols of its run and records one evaluation per
symbol partition (so the UI shows which symbols fail), plus a summary for the run. Severity
ERROR means corrupt data; WARN means stale data. They run in `quality_checks_job` (scheduled
at :30 during market hours) or from the UI: asset page → Checks → Execute.
"""

from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.assets import feature_engineered_data, market_data
from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS, INTEGER_COLUMNS
from mltrading_assets.market_calendar import NEW_YORK, is_in_regular_session, sessions_between
from mltrading_assets.partitions import symbol_partitions
from mltrading_assets.resources import BarSourceResource, PostgresResource

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
Results = dict[str, tuple[bool, dict[str, Any]]]


def _query(database: PostgresResource, sql: str, **params) -> pd.DataFrame:
    with database.connection() as conn:
        rows = conn.execute(sa.text(sql), params)
        return pd.DataFrame(rows.all(), columns=list(rows.keys()))


def _report(
    context: dg.AssetCheckExecutionContext,
    asset: dg.AssetsDefinition,
    name: str,
    severity: dg.AssetCheckSeverity,
    results: Results,
) -> dg.AssetCheckResult:
    for symbol, (passed, metadata) in results.items():
        context.op_execution_context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=asset.key,
                check_name=name,
                passed=passed,
                partition=symbol,
                severity=severity,
                metadata=metadata,
            )
        )
    failed = sorted(s for s, (passed, _) in results.items() if not passed)
    return dg.AssetCheckResult(
        passed=not failed,
        severity=severity,
        metadata={"symbols_checked": len(results), "failed_symbols": ", ".join(failed[:100])},
    )


def _by_symbol(
    database: PostgresResource,
    aggregates: str,
    symbols: list[str],
    source: str,
    table: str = "market_data",
) -> pd.DataFrame:
    """One row of ``aggregates`` per symbol of ``table`` (our SQL; symbols are bound)."""
    return _query(
        database,
        f"SELECT symbol, {aggregates} FROM public.{table} "
        "WHERE symbol = ANY(:symbols) AND source = :source GROUP BY symbol",
        symbols=symbols,
        source=source,
    )


def _per_symbol(symbols: list[str], frame: pd.DataFrame, judge) -> Results:
    by_symbol = {row.symbol: row for row in frame.itertuples(index=False)}
    return {
        s: judge(by_symbol[s]) if s in by_symbol else (False, {"problem": "no bars stored"})
        for s in symbols
    }


def ohlc_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    frame = _by_symbol(
        database,
        "count(*) AS bars, count(*) FILTER (WHERE NOT ("
        " low > 0 AND low <= LEAST(open, close) AND GREATEST(open, close) <= high)) AS bad",
        symbols,
        source,
    )
    return _per_symbol(
        symbols, frame, lambda r: (r.bad == 0, {"bars": int(r.bars), "bad_bars": int(r.bad)})
    )


def duplicate_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    # Two bars starting within the same hour are the same bar twice (e.g. 9:30 and 9:31).
    frame = _by_symbol(
        database,
        "count(*) - count(DISTINCT date_trunc('hour', \"timestamp\" - interval '30 minutes'))"
        " AS duplicates",
        symbols,
        source,
    )
    return _per_symbol(
        symbols, frame, lambda r: (r.duplicates == 0, {"duplicate_bars": int(r.duplicates)})
    )


def gap_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    frame = _by_symbol(
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

    return _per_symbol(symbols, frame, judge)


def freshness_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    market_open = bool(is_in_regular_session(pd.DatetimeIndex([now]))[0])
    frame = _by_symbol(database, 'max("timestamp") AS newest', symbols, source)

    def judge(row) -> tuple[bool, dict[str, Any]]:
        newest = pd.Timestamp(row.newest).tz_convert("UTC")
        age = now - newest
        metadata = {
            "newest_bar": f"{newest.tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York",
            "age_minutes": round(age.total_seconds() / 60, 1),
            "market_open": market_open,
        }
        return (not market_open or age <= pd.Timedelta(hours=1)), metadata

    return _per_symbol(symbols, frame, judge)


def _float_columns() -> list[str]:
    return [c for c in ALL_FEATURE_COLUMNS if c not in INTEGER_COLUMNS]


def feature_range_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    non_finite = " OR ".join(f"{c} IN ('NaN', 'Infinity', '-Infinity')" for c in _float_columns())
    frame = _by_symbol(
        database,
        "count(*) FILTER (WHERE williams_r < -100 OR williams_r > 0) AS williams_out, "
        f"count(*) FILTER (WHERE {non_finite}) AS non_finite",
        symbols,
        source,
        table="feature_engineered_data",
    )
    return _per_symbol(
        symbols,
        frame,
        lambda r: (
            r.williams_out == 0 and r.non_finite == 0,
            {"williams_r_out_of_range": int(r.williams_out), "non_finite_rows": int(r.non_finite)},
        ),
    )


def row_count_problems(
    database: PostgresResource, source: str, symbols: list[str], now: pd.Timestamp
) -> Results:
    frame = _query(
        database,
        "SELECT m.symbol, count(*) AS bars, count(f.symbol) AS feature_rows "
        "FROM public.market_data m LEFT JOIN public.feature_engineered_data f "
        'USING (symbol, "timestamp", source) '
        "WHERE m.symbol = ANY(:symbols) AND m.source = :source GROUP BY m.symbol",
        symbols=symbols,
        source=source,
    )
    return _per_symbol(
        symbols,
        frame,
        lambda r: (
            r.bars == r.feature_rows,
            {"bars": int(r.bars), "feature_rows": int(r.feature_rows)},
        ),
    )


def _symbol_check(
    asset: dg.AssetsDefinition,
    name: str,
    severity: dg.AssetCheckSeverity,
    problems,
    description: str,
) -> dg.AssetChecksDefinition:
    """An asset check over the run's symbol partitions, judged by ``problems``."""

    @dg.asset_check(
        asset=asset, name=name, partitions_def=symbol_partitions, description=description
    )
    def _check(context, database: PostgresResource, source: BarSourceResource):
        bars = source.build()
        results = problems(database, bars.name, list(context.partition_keys), bars.now())
        return _report(context, asset, name, severity, results)

    return _check


asset_checks = [
    _symbol_check(
        market_data,
        "ohlc_sane",
        ERROR,
        ohlc_problems,
        "Every bar has low <= open, close <= high and prices > 0.",
    ),
    _symbol_check(
        market_data,
        "no_duplicate_bars",
        ERROR,
        duplicate_problems,
        "No two bars of a symbol start within the same hour.",
    ),
    _symbol_check(
        market_data,
        "no_session_gaps",
        ERROR,
        gap_problems,
        "Every NYSE session inside the history has bars.",
    ),
    _symbol_check(
        market_data,
        "fresh_during_market_hours",
        WARN,
        freshness_problems,
        "While NYSE is open, the newest bar is at most one trading hour old.",
    ),
    _symbol_check(
        feature_engineered_data,
        "feature_ranges",
        ERROR,
        feature_range_problems,
        "williams_r within [-100, 0]; no NaN or infinite value stored in any feature.",
    ),
    _symbol_check(
        feature_engineered_data,
        "rows_match_bars",
        ERROR,
        row_count_problems,
        "One feature row for every stored bar.",
    ),
]
