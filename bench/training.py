"""The model chain on a year of every benchmark symbol, once per learner: LightGBM and
scikit-learn's HistGradientBoostingClassifier measured side by side, to choose the default."""

import time

import dagster as dg
import sqlalchemy as sa

from bench.monitor import Monitor

LEARNERS = ("hist_gradient_boosting", "lightgbm")


def training(
    instance: dg.DagsterInstance, engine: sa.Engine, database: str, home: str, as_of: str
) -> None:
    from mltrading_assets.defs.models.assets import (
        candidate_model,
        latest_metadata,
        model_evaluation,
        training_dataset,
    )
    from mltrading_assets.lib.launching import train_models

    for learner in LEARNERS:
        config = {
            "resources": {
                "source": {"config": {"kind": "synthetic", "as_of": as_of}},
                "modeling": {"config": {"home": home, "algorithm": learner}},
            }
        }
        with Monitor(engine, database) as monitor:
            started = time.perf_counter()
            run = train_models(instance, run_config=config, log_level="ERROR")
            wall = time.perf_counter() - started
        dataset = latest_metadata(instance, training_dataset.key)
        candidate = latest_metadata(instance, candidate_model.key)
        scores = latest_metadata(instance, model_evaluation.key).get("scores", {})
        auc = scores.get("candidate", {}).get("roc_auc", float("nan"))
        print(
            f"BENCH scenario=training algorithm={learner} symbols={dataset.get('symbols')} "
            f"dataset_rows={dataset.get('rows')} train_rows={candidate.get('train_rows')} "
            f"training_s={candidate.get('training_seconds')} wall_s={wall:.2f} "
            f"peak_rss_mb={monitor.peaks.rss_mb:.0f} "
            f"walk_forward_roc_auc={candidate.get('walk_forward_roc_auc', float('nan')):.4f} "
            f"holdout_roc_auc={auc:.4f} promoted={run.success}",
            flush=True,
        )
