"""The promotion gate: a blocking check on the evaluation, so ``champion_model`` moves only
when the candidate beats the champion by the margin (and every baseline)."""

import dagster as dg

from mltrading_assets.db.system_logs import log_model_event
from mltrading_assets.defs.models.assets import (
    latest_metadata,
    model_evaluation,
    promotion_decision,
)
from mltrading_assets.lib.resources import ModelingResource, PostgresResource
from mltrading_assets.names import MetadataKeys


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    description=(
        "Passes when the candidate beats the champion on the primary metric by the promotion "
        "margin and beats the always_up and last_direction baselines (a first model: the "
        "baselines only). Failing, it stops champion_model in the same run: no promotion."
    ),
)
def promotion_gate(
    context: dg.AssetCheckExecutionContext,
    database: PostgresResource,
    modeling: ModelingResource,
) -> dg.AssetCheckResult:
    evaluated = latest_metadata(context.instance, model_evaluation.key)
    decision = promotion_decision(evaluated, modeling)
    candidate = str(evaluated.get("candidate_version", ""))
    if not decision.promote and evaluated:
        with database.connection(begin=True) as conn:
            log_model_event(
                conn,
                context.run.run_id,
                "REFUSED",
                candidate,
                f"version {candidate} not promoted: {decision.reason}",
            )
    context.log.info(f"{'promote' if decision.promote else 'refuse'}: {decision.reason}")
    scores = dict(evaluated.get(MetadataKeys.SCORES) or {})
    return dg.AssetCheckResult(
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.ERROR,
        description=decision.reason,
        metadata={
            "reason": decision.reason,
            "candidate_version": candidate,
            "champion_version": str(evaluated.get("champion_version", "")),
            "primary_metric": modeling.primary_metric,
            "margin": modeling.promotion_margin,
            **{
                f"{name}_{modeling.primary_metric}": values[modeling.primary_metric]
                for name, values in scores.items()
            },
        },
    )
