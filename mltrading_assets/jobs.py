"""Jobs over the symbol-partitioned assets. Each asset gets its own job: features run in a
separate (ranged) run after the bars they depend on are written."""

import dagster as dg

from mltrading_assets.assets import feature_engineered_data, market_data

# Runs stop after this long (run monitoring): a stuck source must not hold the queue forever.
MAX_RUNTIME_TAGS = {"dagster/max_runtime": "3600"}

market_data_job = dg.define_asset_job(
    "market_data_job",
    # Checks run in their own job (quality_checks_job), not in every refresh.
    selection=dg.AssetSelection.assets(market_data).without_checks(),
    description="Fetch and store hourly bars for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets(feature_engineered_data).without_checks(),
    description="Compute technical features for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)

quality_checks_job = dg.define_asset_job(
    "quality_checks_job",
    selection=dg.AssetSelection.checks_for_assets(market_data, feature_engineered_data),
    description="Data-quality checks of both assets for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
