import dagster as dg

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets(feature_engineered_data).without_checks(),
    description="Compute technical features for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
