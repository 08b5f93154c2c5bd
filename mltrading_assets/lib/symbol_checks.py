"""Asset checks per symbol partition.

Each check runs one SQL query for all the symbols of its run and records one evaluation per
symbol partition (so the UI shows which symbols fail; the hourly scheduled runs record only
the failures), plus a summary for the run. Severity ERROR means corrupt data; WARN means
stale data. The checks of each asset live in its domain folder
(``defs/market_data/checks.py``, ``defs/features/checks.py``).
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.lib.batched_events import log_check_evaluations
from mltrading_assets.lib.check_executions import latest_materializations
from mltrading_assets.lib.partitions import active_partitions, symbol_partitions
from mltrading_assets.lib.resources import (
    BarSourceResource,
    PostgresResource,
    ProcessingResource,
)
from mltrading_assets.names import CHECKS_RECORD_FAILURES, RunTags

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
# The name Dagster gives the output of an @asset_check op (1.13.27).
CHECK_OUTPUT = "result"
# Per symbol: passed, metadata, and optionally a severity of its own (else the check's).
Results = dict[str, tuple]
WHOLE_HISTORY = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Scope:
    """What one check run judges: the symbols' bars from ``source`` since ``since``, at
    ``now``. Bounded by ``processing.check_window_days``, an hourly check reads the same
    few weeks of a symbol with ten years of bars as of one with one year."""

    source: str
    symbols: list[str]
    now: pd.Timestamp
    since: dt.datetime

    @property
    def window(self) -> str:
        if self.since == WHOLE_HISTORY:
            return "stored"
        return f"since {self.since:%Y-%m-%d}"


def query(database: PostgresResource, sql: str, **params) -> pd.DataFrame:
    with database.connection() as conn:
        rows = conn.execute(sa.text(sql), params)
        return pd.DataFrame(rows.all(), columns=list(rows.keys()))


def _report(
    context: dg.AssetCheckExecutionContext,
    asset: dg.AssetsDefinition,
    name: str,
    severity: dg.AssetCheckSeverity,
    results: Results,
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    if context.has_partition_key:
        # One symbol: its own result is the check's (a summary would be recorded for the
        # partition too, over the symbol's numbers).
        [(passed, metadata, *own_severity)] = results.values()
        yield dg.AssetCheckResult(
            passed=passed,
            severity=own_severity[0] if own_severity else severity,
            metadata=metadata,
        )
        return
    # The hourly scheduled runs record only the failures (see check_tick_requests).
    failures_only = context.run.tags.get(RunTags.CHECKS_RECORD) == CHECKS_RECORD_FAILURES
    recorded = {
        symbol: result for symbol, result in results.items() if not (result[0] and failures_only)
    }
    targets = latest_materializations(context.instance, asset.key, list(recorded))
    log_check_evaluations(
        context.op_execution_context,
        [
            dg.AssetCheckEvaluation(
                asset_key=asset.key,
                check_name=name,
                passed=passed,
                partition=symbol,
                severity=own_severity[0] if own_severity else severity,
                metadata=metadata,
                target_materialization_data=targets.get(symbol),
            )
            for symbol, (passed, metadata, *own_severity) in recorded.items()
        ],
    )
    if not context.has_partition_key_range:
        # A run without partitions (the asset page's "Execute all"): Dagster 1.13.27 cannot
        # turn a summary AssetCheckResult into an evaluation there (it looks the target
        # materialization up by the run's partition range and raises), so the per-symbol
        # evaluations above are the results, and the check op's output is given plainly.
        # Pinned by test_checks_of_every_symbol_from_a_run_without_partitions.
        yield dg.Output(None, output_name=CHECK_OUTPUT)
        return
    failed = sorted(s for s, (passed, *_) in results.items() if not passed)
    yield dg.AssetCheckResult(
        passed=not failed,
        severity=severity,
        metadata={
            "symbols_checked": len(results),
            "failed_symbols": ", ".join(failed[:100]),
            "recorded_per_symbol": "failures only" if failures_only else "every symbol",
        },
    )


def by_symbol(
    database: PostgresResource, aggregates: str, scope: Scope, table: str = "market_data"
) -> pd.DataFrame:
    """One row of ``aggregates`` per symbol over the scope's window of ``table`` (our SQL;
    symbols are bound)."""
    return query(
        database,
        f"SELECT symbol, {aggregates} FROM public.{table} "
        'WHERE symbol = ANY(:symbols) AND source = :source AND "timestamp" >= :since '
        "GROUP BY symbol",
        symbols=scope.symbols,
        source=scope.source,
        since=scope.since,
    )


def per_symbol(
    scope: Scope, frame: pd.DataFrame, judge, symbols: list[str] | None = None
) -> Results:
    by_symbol = {row.symbol: row for row in frame.itertuples(index=False)}
    none = (False, {"problem": f"no bars {scope.window}"})
    return {s: judge(by_symbol[s]) if s in by_symbol else none for s in symbols or scope.symbols}


def run_symbols(context: dg.AssetCheckExecutionContext, database: PostgresResource) -> list[str]:
    """The run's symbol partitions; a run without any (the asset page's "Execute all"
    checks button launches one) checks every active symbol that is a partition."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)
    return active_partitions(context.instance, database).symbols


def symbol_check(
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
    def _check(
        context,
        database: PostgresResource,
        source: BarSourceResource,
        processing: ProcessingResource,
    ):
        bars = source.build()
        now = bars.now()
        days = processing.check_window_days
        scope = Scope(
            source=bars.name,
            symbols=run_symbols(context, database),
            now=now,
            since=(now - pd.Timedelta(days=days)).to_pydatetime() if days > 0 else WHOLE_HISTORY,
        )
        yield from _report(context, asset, name, severity, problems(database, scope))

    return _check
