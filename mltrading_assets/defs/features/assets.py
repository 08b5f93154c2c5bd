"""Technical features per bar (the contract in ``features/contract.py``, described in
``features/REFERENCE.md``), computed from market_data."""

import dagster as dg

from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.features.contract import CORE_COLUMNS, LOOKBACK_BARS
from mltrading_assets.lib.distributed import queue_tags
from mltrading_assets.lib.partitions import market_asset
from mltrading_assets.lib.resources import BarSourceResource, PostgresResource, ProcessingResource
from mltrading_assets.lib.schedules import market_hours_freshness
from mltrading_assets.lib.symbol_batch import materialize_partitions
from mltrading_assets.workers.feature_task import build_features


@market_asset(
    freshness_policy=market_hours_freshness(25),
    op_tags=queue_tags("features"),
    deps=[market_data],
    description=(
        f"{len(CORE_COLUMNS)} technical indicators per bar (more with feature_set=extended) in "
        "public.feature_engineered_data. Only new or changed bars are recomputed, from a "
        f"{LOOKBACK_BARS}-bar lookback; a new feature_version recomputes everything."
    ),
)
def feature_engineered_data(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
):
    yield from materialize_partitions(context, build_features, database, source, processing)
