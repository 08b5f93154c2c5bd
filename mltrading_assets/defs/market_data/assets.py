"""Hourly bars per symbol: the asset every other one is computed from."""

import dagster as dg

from mltrading_assets.defs.resources import (
    BarSourceResource,
    PostgresResource,
    ProcessingResource,
)
from mltrading_assets.defs.symbols.partitions import symbol_batches, symbol_partitions
from mltrading_assets.lib.symbol_batch import materialize_partitions
from mltrading_assets.workers.symbol_work import load_market_data


@dg.asset(
    partitions_def=symbol_partitions,
    backfill_policy=symbol_batches,
    output_required=False,
    group_name="market",
    kinds={"postgres", "pandas"},
    owners=["team:mltrading"],
    # One market_data step at a time across all runs (pool limit in dagster.yaml), each with
    # `max_concurrent_requests` single-request workers: Yahoo never sees more than 5 fetches.
    pool="market_data_source",
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    description=(
        "Hourly OHLCV bars per symbol in public.market_data (bar start in UTC). A new symbol "
        "gets a year of history; later runs fetch what is missing plus a few days of overlap."
    ),
)
def market_data(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
):
    yield from materialize_partitions(
        context,
        load_market_data,
        database,
        source,
        processing,
        workers=source.fetch_workers(processing.worker_count()),
    )
