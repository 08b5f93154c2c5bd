"""Jobs over the symbol-partitioned assets. Each asset gets its own job: features run in a
separate (ranged) run after the bars they depend on are written."""

import dagster as dg

from mltrading_assets.assets import feature_engineered_data, market_data

# Runs stop after this long (run monitoring): a stuck source must not hold the queue forever.
MAX_RUNTIME_TAGS = {"dagster/max_runtime": "3600"}

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=[market_data],
    description="Fetch and store hourly bars for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)

features_job = dg.define_asset_job(
    "features_job",
    selection=[feature_engineered_data],
    description="Compute technical features for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
