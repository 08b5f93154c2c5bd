"""Predictions follow the features they read, and every new champion: a run-status sensor
on features runs (as features follow bars) and an asset sensor on ``champion_model``."""

import dagster as dg
from dagster._core.storage.tags import BACKFILL_ID_TAG  # Dagster's own tag name (1.13.27)

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.features.jobs import features_job
from mltrading_assets.defs.models.assets import champion_model, model_predictions
from mltrading_assets.defs.models.jobs import model_predictions_job
from mltrading_assets.lib.follow_up import (
    follow_up_sensors,
    followed_already,
    materialized_by,
    requests_after,
)
from mltrading_assets.lib.partitions import active_partitions
from mltrading_assets.lib.ranged_runs import symbol_range_requests
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.names import RunTags


def _follow_features(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    # None for a run with nothing to follow, so the tick moves on (see follow_up_sensors).
    if not materialized_by(run, features_job, feature_engineered_data.key):
        return None
    if context.instance.get_latest_materialization_event(champion_model.key) is None:
        return dg.SkipReason("no champion model yet: nothing to predict with")
    if followed_already(context.instance, run, RunTags.PREDICTIONS_AFTER):
        return None
    requests = requests_after(
        context.instance, run, model_predictions_job.name, RunTags.PREDICTIONS_AFTER, "predictions"
    )
    return requests or dg.SkipReason(f"run {run.run_id} covered no valid symbol partition")


predictions_after_features, predictions_after_failed_features = follow_up_sensors(
    model_predictions_job,
    _follow_features,
    on_success=(
        "predictions_after_features",
        "Predict the newest bar of each symbol as soon as its features are in.",
    ),
    on_failure=(
        "predictions_after_failed_features",
        "A partly failed features run still wrote its good symbols: predict those.",
    ),
)


@dg.asset_sensor(
    asset_key=champion_model.key,
    job=model_predictions_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A new champion (trained or promoted by hand) predicts every active symbol.",
)
def predictions_after_promotion(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, database: PostgresResource
):
    if promoter_predicts(context.instance, asset_event.run_id):
        return dg.SkipReason(
            f"run {asset_event.run_id} promoted the champion and predicts with it itself"
        )
    active = active_partitions(context.instance, database)
    requests = symbol_range_requests(
        active.ordered,
        active.symbols,
        f"predictions-for:{asset_event.run_id}:{asset_event.timestamp}",
        {},
    )
    return requests or dg.SkipReason("no active symbols to predict")


def promoter_predicts(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run that moved the champion, or the backfill it belongs to, also
    materializes model_predictions (a "Materialize all" of the lineage): predicting every
    symbol again right after it would only repeat its work."""
    run = instance.get_run_by_id(run_id) if run_id else None
    if run is None:  # a promotion by hand (`mltrading models promote`) has no run
        return False
    if model_predictions.key in (run.asset_selection or ()):
        return True
    backfill = (
        instance.get_backfill(run.tags[BACKFILL_ID_TAG]) if BACKFILL_ID_TAG in run.tags else None
    )
    return backfill is not None and model_predictions.key in (backfill.asset_selection or ())
