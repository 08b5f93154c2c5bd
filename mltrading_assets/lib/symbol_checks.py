"""Asset checks per symbol partition.

Each check runs one SQL query for all the symbols of its run and records one evaluation per
symbol partition (so the UI shows which symbols fail), plus a summary for the run. Severity
ERROR means corrupt data; WARN means stale data. The checks of each asset live in its
domain folder (``defs/market_data/checks.py``, ``defs/features/checks.py``).
"""

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.defs.resources import BarSourceResource, PostgresResource
from mltrading_assets.defs.symbols.partitions import symbol_partitions

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
# Per symbol: passed, metadata, and optionally a severity of its own (else the check's).
Results = dict[str, tuple]


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
) -> dg.AssetCheckResult:
    for symbol, (passed, metadata, *own_severity) in results.items():
        context.op_execution_context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=asset.key,
                check_name=name,
                passed=passed,
                partition=symbol,
                severity=own_severity[0] if own_severity else severity,
                metadata=metadata,
            )
        )
    failed = sorted(s for s, (passed, *_) in results.items() if not passed)
    return dg.AssetCheckResult(
        passed=not failed,
        severity=severity,
        metadata={"symbols_checked": len(results), "failed_symbols": ", ".join(failed[:100])},
    )


def by_symbol(
    database: PostgresResource,
    aggregates: str,
    symbols: list[str],
    source: str,
    table: str = "market_data",
) -> pd.DataFrame:
    """One row of ``aggregates`` per symbol of ``table`` (our SQL; symbols are bound)."""
    return query(
        database,
        f"SELECT symbol, {aggregates} FROM public.{table} "
        "WHERE symbol = ANY(:symbols) AND source = :source GROUP BY symbol",
        symbols=symbols,
        source=source,
    )


def per_symbol(symbols: list[str], frame: pd.DataFrame, judge) -> Results:
    by_symbol = {row.symbol: row for row in frame.itertuples(index=False)}
    return {
        s: judge(by_symbol[s]) if s in by_symbol else (False, {"problem": "no bars stored"})
        for s in symbols
    }


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
    def _check(context, database: PostgresResource, source: BarSourceResource):
        bars = source.build()
        results = problems(database, bars.name, list(context.partition_keys), bars.now())
        return _report(context, asset, name, severity, results)

    return _check
