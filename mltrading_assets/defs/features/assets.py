"""Technical features per bar (the FEATURES.md contract), computed from market_data."""

import dagster as dg

from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.defs.resources import (
    BarSourceResource,
    PostgresResource,
    ProcessingResource,
)
from mltrading_assets.defs.symbols.partitions import symbol_batches, symbol_partitions
from mltrading_assets.lib.symbol_batch import materialize_partitions
from mltrading_assets.workers.symbol_work import build_features


@dg.asset(
    partitions_def=symbol_partitions,
    backfill_policy=symbol_batches,
    deps=[market_data],
    output_required=False,
    group_name="market",
    kinds={"postgres", "pandas"},
    owners=["team:mltrading"],
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    description=(
        "37 technical indicators per bar (FEATURES.md contract) in "
        "public.feature_engineered_data. Only new or changed bars are recomputed, from a "
        "600-bar lookback; a new feature_version recomputes everything."
    ),
)
def feature_engineered_data(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
):
    yield from materialize_partitions(context, build_features, database, source, processing)
