import dagster as dg

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.lib.follow_up import requests_after
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS
from mltrading_assets.names import RunTags

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets(feature_engineered_data).without_checks(),
    description="Compute technical features for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)


def features_requests_after(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> list[dg.RunRequest]:
    """The features run(s) for the symbols of the bars run ``run``."""
    return requests_after(instance, run, features_job.name, RunTags.FEATURES_AFTER, "features")
