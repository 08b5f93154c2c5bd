import dagster as dg

from mltrading_assets.defs.models.assets import (
    candidate_model,
    champion_model,
    model_evaluation,
    model_predictions,
    training_dataset,
)
from mltrading_assets.defs.models.resources import modeling_resource
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS
from mltrading_assets.lib.resources import as_run_config

model_training_job = dg.define_asset_job(
    "model_training_job",
    selection=dg.AssetSelection.assets(
        training_dataset, candidate_model, model_evaluation, champion_model
    ),
    description=(
        "Retrain: dataset → candidate → evaluation against the champion → promotion, only if "
        "the promotion_gate check passes. Open the launchpad to change the modeling settings "
        "(horizon, learner, margin, …) for one run."
    ),
    # The launchpad opens with every modeling setting in force and with promotion on: the
    # one place that retrains and promotes (schedule, `mltrading models train`, the UI).
    config={
        "ops": {champion_model.key.to_python_identifier(): {"config": {"promote": True}}},
        "resources": {"modeling": {"config": as_run_config(modeling_resource())}},
    },
    tags=MAX_RUNTIME_TAGS,
)

model_predictions_job = dg.define_asset_job(
    "model_predictions_job",
    selection=dg.AssetSelection.assets(model_predictions).without_checks(),
    description="The champion's prediction for the newest bar of the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
