import dagster as dg

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.lib.follow_up import request_after
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS
from mltrading_assets.names import RunTags

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets(feature_engineered_data).without_checks(),
    description="Compute technical features for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)


def features_request_after(run: dg.DagsterRun) -> dg.RunRequest:
    """The features run for the symbols of the bars run ``run``."""
    return request_after(run, features_job.name, RunTags.FEATURES_AFTER, "features")
