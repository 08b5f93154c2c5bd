import dagster as dg

from mltrading_assets.defs.models.assets import (
    candidate_model,
    champion_model,
    model_evaluation,
    model_predictions,
    training_dataset,
)
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS

model_training_job = dg.define_asset_job(
    "model_training_job",
    selection=dg.AssetSelection.assets(
        training_dataset, candidate_model, model_evaluation, champion_model
    ),
    description=(
        "Retrain: dataset → candidate → evaluation against the champion → promotion, only if "
        "the promotion_gate check passes."
    ),
    tags=MAX_RUNTIME_TAGS,
)

model_predictions_job = dg.define_asset_job(
    "model_predictions_job",
    selection=dg.AssetSelection.assets(model_predictions).without_checks(),
    description="The champion's prediction for the newest bar of the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
