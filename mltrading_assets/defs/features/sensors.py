"""Features follow the bars they depend on.

Features are triggered by the completion of the market_data run whose bars they use, never
by the clock alone: a run-status sensor (not declarative automation) because it reuses the
exact symbol range of the data run in one features run, costs one query per finished run,
and works the same for scheduled runs, backfills and runs launched from the UI.
"""

import dagster as dg

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.features.jobs import features_job, features_requests_after
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.lib.follow_up import follow_up_sensors, followed_already, materialized_by
from mltrading_assets.names import RunTags


def _follow(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    # None for a run with nothing to follow, so the tick moves on (see follow_up_sensors):
    # not a bars run, a run that computed the features itself, or one followed already.
    if not materialized_by(run, market_data_job, market_data.key):
        return None
    if run.status == dg.DagsterRunStatus.SUCCESS and feature_engineered_data.key in (
        run.asset_selection or ()
    ):
        return None
    if followed_already(context.instance, run, RunTags.FEATURES_AFTER):
        return None
    return features_requests_after(context.instance, run) or dg.SkipReason(
        f"run {run.run_id} covered no valid symbol partition"
    )


features_after_market_data, features_after_failed_market_data = follow_up_sensors(
    features_job,
    _follow,
    on_success=(
        "features_after_market_data",
        "Compute features as soon as a market_data run has written its bars.",
    ),
    on_failure=(
        "features_after_failed_market_data",
        "A partly failed market_data run still wrote the bars of its good symbols: "
        "compute their features too.",
    ),
)
