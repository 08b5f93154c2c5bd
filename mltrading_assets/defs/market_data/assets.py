"""Hourly bars per symbol: the asset every other one is computed from."""

import dagster as dg

from mltrading_assets.lib import distributed
from mltrading_assets.lib.distributed import queue_tags
from mltrading_assets.lib.partitions import market_asset
from mltrading_assets.lib.resources import BarSourceResource, PostgresResource, ProcessingResource
from mltrading_assets.lib.schedules import market_hours_freshness
from mltrading_assets.lib.symbol_batch import materialize_partitions
from mltrading_assets.names import BAR_SOURCE_POOL
from mltrading_assets.workers.bar_task import load_market_data


@market_asset(
    freshness_policy=market_hours_freshness(20),
    # One market_data step at a time across all runs (pool limit in dagster.yaml), each with
    # `max_concurrent_requests` single-request workers: Yahoo never sees more than 5 fetches.
    # On worker hosts each host fetches at once, bounded by its request slots (a host is one
    # client address to Yahoo), so bar steps take no pool slot there.
    pool=None if distributed.enabled() else BAR_SOURCE_POOL,
    # On worker hosts (Celery), bar steps can have a queue of their own.
    op_tags=queue_tags("bars"),
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
