import dagster as dg

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS

quality_checks_job = dg.define_asset_job(
    "quality_checks_job",
    selection=dg.AssetSelection.checks_for_assets(market_data, feature_engineered_data),
    description="Data-quality checks of both assets for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
