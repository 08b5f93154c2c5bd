"""Models as assets: the dataset, a candidate, its evaluation against the champion, the
champion itself (moved only past the ``promotion_gate`` check) and the live predictions."""

import base64
import json

import dagster as dg
import pandas as pd
from pydantic import Field

from mltrading_assets.db.model_rows import (
    load_training_rows,
    newest_feature_rows,
    write_predictions,
)
from mltrading_assets.db.system_logs import log_model_event
from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.lib.distributed import queue_tags
from mltrading_assets.lib.partitions import SYMBOL_PARTITIONED, retry_policy
from mltrading_assets.lib.resources import (
    BarSourceResource,
    ModelingResource,
    PostgresResource,
    ProcessingResource,
)
from mltrading_assets.models import evaluation
from mltrading_assets.models.dataset import (
    LABEL_TIME,
    build_dataset,
    model_features,
    summarize,
)
from mltrading_assets.models.gate import Decision, decide
from mltrading_assets.models.training import predict_up, train
from mltrading_assets.names import CHAMPION_MODEL_ASSET, OWNERS, MetadataKeys, ModelAliases

COMMON = {"group_name": "models", "owners": OWNERS, "retry_policy": retry_policy(30)}


def _stop(description: str) -> dg.Failure:
    """A failure a retry would only repeat (a missing input, a refused candidate): the
    RetryPolicy is for transient ones."""
    return dg.Failure(description, allow_retries=False)


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, object]:
    """The metadata values of ``key``'s latest materialization ({} if never)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: entry.value for name, entry in event.asset_materialization.metadata.items()}


def promotion_decision(evaluated: dict[str, object], modeling: ModelingResource) -> Decision:
    """The gate's verdict on the latest evaluation (the check and the promotion both ask)."""
    if not evaluated:
        return Decision(False, "model_evaluation has not been materialized yet")
    if evaluated["candidate_version"] == evaluated["champion_version"]:
        return Decision(True, f"version {evaluated['candidate_version']} is the champion already")
    scores = dict(evaluated[MetadataKeys.SCORES])
    return decide(scores, modeling.primary_metric, modeling.promotion_margin)


@dg.asset(
    deps=[feature_engineered_data],
    kinds={"parquet", "postgres"},
    description=(
        "One row per (symbol, complete bar) of the active symbols with its features and the "
        "label known only after it: did the close rise over the next horizon_bars bars. "
        "Warm-up rows and rows whose label is not known yet are left out. Parquet under "
        "MLTRADING_HOME/models."
    ),
    **COMMON,
)
def training_dataset(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
    modeling: ModelingResource,
) -> dg.MaterializeResult:
    bars = source.build()
    since = bars.now() - pd.Timedelta(days=modeling.history_days)
    features = model_features(processing.feature_set)
    with database.connection() as conn:
        rows = load_training_rows(conn, bars.name, features, since)
    dataset = build_dataset(rows, features, modeling.horizon_bars)
    if dataset.empty:
        raise _stop(
            f"no training rows: no active symbol has {modeling.horizon_bars + 1} complete "
            f"bars with every feature since {since:%Y-%m-%d} (source {bars.name}); "
            "materialize market_data and feature_engineered_data first"
        )
    path = modeling.dataset_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    dataset.to_parquet(partial, index=False)
    partial.replace(path)  # readers never see half a file
    summary = summarize(dataset)
    context.log.info(
        f"{summary.rows} rows of {summary.symbols} symbols, {summary.first_bar} .. "
        f"{summary.last_bar}, {summary.share_up:.1%} up"
    )
    return dg.MaterializeResult(
        metadata={
            **summary.as_metadata(),
            "dagster/row_count": summary.rows,
            "path": dg.MetadataValue.path(str(path)),
            "horizon_bars": modeling.horizon_bars,
            "features": len(features),
            "source": bars.name,
        }
    )


def _read_dataset(modeling: ModelingResource) -> pd.DataFrame:
    path = modeling.dataset_path()
    if not path.exists():
        raise _stop(f"{path} does not exist: materialize training_dataset first")
    return pd.read_parquet(path)


@dg.asset(
    deps=[training_dataset],
    kinds={"scikit", "mlflow"},
    description=(
        "A gradient-boosted direction classifier, validated walk-forward with cuts in time "
        "across all symbols (embargo >= horizon), fitted on everything before the holdout, "
        "registered in MLflow with the alias `challenger`."
    ),
    # On worker hosts (Celery), training can go to a bigger host's queue.
    op_tags=queue_tags("training"),
    **COMMON,
)
def candidate_model(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    processing: ProcessingResource,
    modeling: ModelingResource,
) -> dg.MaterializeResult:
    dataset = _read_dataset(modeling)
    features = model_features(processing.feature_set)
    try:
        result = train(
            dataset,
            features,
            modeling.settings(),
            modeling.holdout_bars,
            modeling.embargo,
            modeling.folds,
        )
    except ValueError as exc:
        raise _stop(f"cannot train: {exc}") from None
    folds = pd.DataFrame(result.folds)
    registry = modeling.registry(database.url)
    version = registry.register_candidate(
        result.model,
        params={
            **modeling.settings().params(),
            "horizon_bars": modeling.horizon_bars,
            "embargo_bars": modeling.embargo,
            "holdout_bars": modeling.holdout_bars,
            "features": len(features),
        },
        metrics={
            "cv_roc_auc": float(folds["roc_auc"].mean()),
            "cv_log_loss": float(folds["log_loss"].mean()),
            "train_rows": float(result.train_rows),
            "training_seconds": result.seconds,
        },
        tags={
            "features": ",".join(features),
            "feature_set": processing.feature_set,
            "horizon_bars": str(modeling.horizon_bars),
            "holdout_start": result.holdout.test_start.isoformat(),
            "train_end": result.holdout.train_end.isoformat(),
            "algorithm": modeling.algorithm,
        },
    )
    context.log.info(
        f"version {version.version}: walk-forward ROC AUC {folds['roc_auc'].mean():.4f} over "
        f"{len(folds)} folds, {result.train_rows} training rows, {result.seconds:.1f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": version.version,
            "mlflow_run_id": version.run_id,
            "algorithm": modeling.algorithm,
            "train_rows": result.train_rows,
            "holdout_start": result.holdout.test_start.isoformat(),
            "walk_forward_roc_auc": float(folds["roc_auc"].mean()),
            "walk_forward": dg.MetadataValue.md(folds.to_markdown(index=False, floatfmt=".4f")),
            "training_seconds": round(result.seconds, 2),
        }
    )


def _scores_markdown(scores: dict[str, dict[str, float]]) -> str:
    frame = pd.DataFrame(scores).T[list(evaluation.METRICS)]
    return frame.to_markdown(floatfmt=".4f")


@dg.asset(
    deps=[candidate_model],
    kinds={"scikit", "mlflow"},
    description=(
        "The challenger and the champion scored on the same, most recent holdout (accuracy, "
        "log loss, ROC AUC, information coefficient), beside the naive baselines always_up "
        "and last_direction; the check promotion_gate decides from these numbers."
    ),
    **COMMON,
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    modeling: ModelingResource,
) -> dg.MaterializeResult:
    registry = modeling.registry(database.url)
    candidate = registry.by_alias(ModelAliases.CHALLENGER)
    if candidate is None:
        raise _stop("no challenger in the registry: materialize candidate_model first")
    champion = registry.by_alias(ModelAliases.CHAMPION)
    dataset = _read_dataset(modeling)
    holdout_start = pd.Timestamp(candidate.tags["holdout_start"])
    holdout = dataset[dataset["timestamp"] >= holdout_start].reset_index(drop=True)
    history = dataset[dataset[LABEL_TIME] < holdout_start]
    if holdout.empty:
        raise _stop(f"the dataset has no rows from the holdout start {holdout_start}")

    model = registry.load(candidate.version)
    probabilities = {"candidate": predict_up(model, _x(holdout, candidate))}
    notes = []
    if champion is not None and champion.version != candidate.version:
        missing = set(champion.tags["features"].split(",")) - set(dataset.columns)
        if missing:
            notes.append(f"champion v{champion.version} needs {sorted(missing)}: not scored")
        else:
            model = registry.load(champion.version)
            probabilities["champion"] = predict_up(model, _x(holdout, champion))
    probabilities.update(evaluation.baseline_probabilities(history, holdout))
    scores = {name: evaluation.score(p, holdout) for name, p in probabilities.items()}
    registry.log_metrics(
        candidate.run_id, {f"holdout_{k}": v for k, v in scores["candidate"].items()}
    )
    curves = {
        f"{name} v{version.version}": evaluation.long_short_returns(probabilities[name], holdout)
        for name, version in (("candidate", candidate), ("champion", champion))
        if name in probabilities
    }
    png = evaluation.comparison_png(curves, "Long/short on the signal over the holdout")
    context.log.info(f"holdout scores: {json.dumps(scores)}")
    return dg.MaterializeResult(
        # What a reader looks at first, then the numbers the gate reads (scores).
        metadata={
            "comparison": dg.MetadataValue.md(_scores_markdown(scores)),
            "long_short": dg.MetadataValue.md(
                f"![long/short](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "candidate_version": candidate.version,
            "champion_version": champion.version if champion else "",
            "holdout_start": holdout_start.isoformat(),
            "holdout_end": holdout["timestamp"].max().isoformat(),
            "holdout_rows": len(holdout),
            "primary_metric": modeling.primary_metric,
            "notes": "; ".join(notes),
            MetadataKeys.SCORES: dg.MetadataValue.json(scores),
        }
    )


class PromotionConfig(dg.Config):
    """Whether this run may move the champion. Required, so that no "Materialize all" of
    the whole lineage trains and promotes a model by surprise: Dagster asks for it first."""

    promote: bool = Field(
        description="move the champion alias to the candidate when promotion_gate passes"
    )


def _x(rows: pd.DataFrame, version) -> pd.DataFrame:
    return rows[version.tags["features"].split(",")]


@dg.asset(
    name=CHAMPION_MODEL_ASSET,
    deps=[model_evaluation],
    kinds={"mlflow"},
    description=(
        "The live model: the MLflow alias `champion`, moved to the challenger only when the "
        "blocking check promotion_gate passed in the same run. Retrain and promote with "
        "model_training_job; materialized any other way, it asks whether to promote."
    ),
    output_required=False,
    **COMMON,
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    database: PostgresResource,
    modeling: ModelingResource,
):
    if not config.promote:
        context.log.info("promote is false: the champion stays as it is")
        return
    evaluated = latest_metadata(context.instance, model_evaluation.key)
    decision = promotion_decision(evaluated, modeling)
    if not decision.promote:  # the gate blocks this step; a rerun from the UI must not skip it
        raise _stop(f"not promoted: {decision.reason}")
    version = str(evaluated["candidate_version"])
    registry = modeling.registry(database.url)
    previous = registry.promote(version, decision.reason)
    replaced = previous.version if previous else ""
    if replaced != version:
        with database.connection(begin=True) as conn:
            log_model_event(
                conn,
                context.run_id,
                "PROMOTED",
                version,
                f"version {version} replaces {replaced or 'no champion'}: {decision.reason}",
            )
    context.log.info(f"champion: version {version} ({decision.reason})")
    scores = dict(evaluated[MetadataKeys.SCORES])
    yield dg.MaterializeResult(
        metadata={
            "model_version": version,
            "replaced_version": replaced,
            "reason": decision.reason,
            **{f"holdout_{k}": v for k, v in scores["candidate"].items()},
        }
    )


@dg.asset(
    **SYMBOL_PARTITIONED,
    deps=[feature_engineered_data, champion_model],
    kinds={"postgres", "mlflow"},
    description=(
        "The champion's probability that the close rises over its horizon, for the newest bar "
        "of each active symbol, in public.model_predictions (with the model version); "
        "refreshed after every features run and every promotion."
    ),
    **COMMON,
)
def model_predictions(
    context: dg.AssetExecutionContext,
    database: PostgresResource,
    source: BarSourceResource,
    modeling: ModelingResource,
) -> dg.MaterializeResult:
    registry = modeling.registry(database.url)
    champion = registry.by_alias(ModelAliases.CHAMPION)
    if champion is None:
        raise _stop(
            "no champion model yet: materialize the models group (or run `mltrading models "
            "train`) first"
        )
    features = champion.tags["features"].split(",")
    symbols = list(context.partition_keys)
    source_name = source.build().name
    with database.connection(begin=True) as conn:
        rows = newest_feature_rows(conn, symbols, source_name, features)
        complete = rows[features].notna().all(axis=1)
        scored = rows[complete].copy()
        if not scored.empty:
            scored["probability_up"] = predict_up(registry.load(champion.version), scored[features])
        written = write_predictions(
            conn,
            scored,
            source_name,
            registry.name,
            champion.version,
            int(champion.tags["horizon_bars"]),
        )
    unscored = sorted(set(symbols) - set(scored["symbol"]))
    if unscored:
        context.log.warning(
            f"no prediction for {len(unscored)} symbol(s) (inactive, no features yet, or a "
            f"warm-up bar): {', '.join(unscored[:20])}"
        )
    return dg.MaterializeResult(
        metadata={
            "model_version": champion.version,
            "predictions": written,
            "newest_bar": scored["timestamp"].max().isoformat() if written else "",
            "mean_probability_up": float(scored["probability_up"].mean()) if written else 0.0,
            "unscored_symbols": len(unscored),
        }
    )
