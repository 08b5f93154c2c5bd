"""The model chain through Dagster on a real PostgreSQL and MLflow registry: a first model
that beats the baselines becomes champion, a better one replaces it, a worse one is refused
by the blocking gate, and predictions follow the champion."""

import datetime as dt
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from mltrading_assets.cli.main import main
from mltrading_assets.db.symbols import add_symbols, deactivate_symbols
from mltrading_assets.defs.models.assets import champion_model
from mltrading_assets.defs.models.sensors import (
    predictions_after_features,
    predictions_after_promotion,
)
from mltrading_assets.features.contract import CORE_COLUMNS, INTEGER_COLUMNS
from mltrading_assets.lib.alert_conditions import failed_runs
from mltrading_assets.lib.launching import materialize, train_models
from mltrading_assets.lib.partitions import register_partitions
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.models.registry import CHAMPION, ModelRegistry, tracking_uri_for
from mltrading_assets_tests.conftest import success_sensor_context

AS_OF = pd.Timestamp("2026-11-20T21:00:00Z")
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
BARS = 1200


def crafted_rows(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bars and features in which two features say where the next close goes: one on its
    own (a single split learns it) and one only together with the first (a boosted model
    learns both)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(end=AS_OF, periods=BARS, freq="h", name="timestamp")
    features = pd.DataFrame(rng.standard_normal((BARS, len(CORE_COLUMNS))), index, CORE_COLUMNS)
    for column in set(INTEGER_COLUMNS) & set(CORE_COLUMNS):
        features[column] = rng.integers(0, 2, BARS)
    x1, x2 = features["price_to_sma_24"], features["volatility_ratio_24_120"]
    up = rng.random(BARS) < 1 / (1 + np.exp(-(2.0 * x1 + 2.5 * np.sign(x1 * x2))))
    # Bar t + 1 closes the way bar t's features say.
    steps = np.r_[1.0, np.where(up[:-1], 1.01, 0.99)]
    close = 100 * np.cumprod(steps)
    features["returns"] = steps - 1
    bars = pd.DataFrame(
        {"open": close, "high": close * 1.002, "low": close * 0.998, "close": close},
        index=index,
    ).assign(adj_close=close, volume=1000.0)
    return bars, features


def store(engine: sa.Engine, symbol: str, bars: pd.DataFrame, features: pd.DataFrame) -> None:
    keys = {"symbol": symbol, "source": "synthetic"}
    with engine.begin() as conn:
        bars.assign(**keys).reset_index().to_sql(
            "market_data", conn, schema="public", if_exists="append", index=False
        )
        rows = features.join(bars[["open", "high", "low", "close", "volume"]])
        rows.assign(**keys, feature_set="core", feature_version="1").reset_index().to_sql(
            "feature_engineered_data", conn, schema="public", if_exists="append", index=False
        )


@pytest.fixture
def home(instance, db, tmp_path):
    with db.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS mlflow CASCADE; CREATE SCHEMA mlflow")
        add_symbols(conn, SYMBOLS)
    for number, symbol in enumerate(SYMBOLS):
        store(db, symbol, *crafted_rows(seed=number))
    register_partitions(instance, SYMBOLS)
    return tmp_path


def run_config(home, **modeling) -> dict:
    return {
        "resources": {
            "source": {"config": {"kind": "synthetic", "as_of": AS_OF.isoformat()}},
            "modeling": {
                "config": {"home": str(home), "iterations": 60, "holdout_bars": 200, **modeling}
            },
        }
    }


# A single split: it learns the direct signal only.
STUMP = {"iterations": 1, "max_leaf_nodes": 2}


def system_log(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT status, notes FROM public.system_logs "
                "WHERE job_name = 'model_promotion' ORDER BY id"
            )
        ).all()


def gate_results(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]


def prediction_versions(db) -> list[str]:
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT DISTINCT model_version FROM public.model_predictions")
            ).scalars()
        )


def test_better_candidates_are_promoted_worse_ones_refused_and_predictions_follow(
    instance, db, home, database_url, monkeypatch
):
    registry = ModelRegistry(tracking_uri_for(database_url), home / "models" / "mlflow-artifacts")
    # A features run before any model exists: nothing to predict with yet.
    [features_run] = materialize(instance, "features", SYMBOLS, run_config=run_config(home))
    features_run = instance.get_run_by_id(features_run.run_id)
    skipped = predictions_after_features(
        success_sensor_context(instance, features_run, predictions_after_features)
    )
    assert skipped.skip_message == "no champion model yet: nothing to predict with"

    # 1. The first model (a stump) needs to beat the baselines only.
    first = train_models(instance, run_config(home, **STUMP))
    assert first.success
    assert registry.by_alias(CHAMPION).version == "1"

    # 2. A real boosted model beats that champion by far more than the margin.
    better = train_models(instance, run_config(home))
    assert better.success
    champion = registry.by_alias(CHAMPION)
    assert champion.version == "2" and champion.tags["previous_champion"] == "1"
    assert "beats champion" in champion.tags["promotion_reason"]

    # 3. A stump again: worse than the champion, so the gate fails and blocks the promotion.
    worse = train_models(instance, run_config(home, **STUMP))
    assert not worse.success
    [gate] = gate_results(instance, worse.run_id)
    assert not gate.passed and gate.blocking
    assert "vs champion" in gate.description and "the margin is 0.0020" in gate.description
    assert registry.by_alias(CHAMPION).version == "2"
    assert registry.by_alias("challenger").version == "3"
    promoted_in = {
        r.run_id for r in instance.fetch_materializations(champion_model.key, limit=10).records
    }
    assert promoted_in == {first.run_id, better.run_id}

    logged = system_log(db)
    assert [status for status, _ in logged] == ["PROMOTED", "PROMOTED", "REFUSED"]
    assert logged[2][1].startswith("version 3 not promoted: roc_auc ")
    # A refusal is news (alert_model_decisions), not a failed run to alert on.
    now = pd.Timestamp.now(tz="UTC")
    assert failed_runs(instance, now, dt.timedelta(hours=1), lambda run_id: run_id) == []

    # Predictions: one row per active symbol, for its newest bar, from the champion.
    with db.begin() as conn:
        deactivate_symbols(conn, ["DDD"])
    [run] = materialize(instance, "predictions", SYMBOLS, run_config=run_config(home))
    assert run.success
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT symbol, timestamp, model_version, probability_up "
                "FROM public.model_predictions ORDER BY symbol"
            )
        ).all()
    assert [r.symbol for r in rows] == ["AAA", "BBB", "CCC"]
    assert {r.timestamp for r in rows} == {AS_OF.to_pydatetime()}
    assert {r.model_version for r in rows} == {"2"}
    assert all(0 < r.probability_up < 1 for r in rows)

    # By hand: the registry's versions, and a rollback with its reason.
    monkeypatch.setenv("MLTRADING_HOME", str(home))
    listed = CliRunner().invoke(main, ["models", "list"], catch_exceptions=False).output
    assert [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["1", "-"],
        ["2", "champion"],
        ["3", "challenger"],
    ]
    rolled = CliRunner().invoke(main, ["models", "rollback", "--reason", "v2 misbehaves live"])
    assert rolled.exit_code == 0, rolled.output
    assert "champion: version 1 (was 2)" in rolled.output
    # No daemon runs here: the command itself moved the predictions to the new champion.
    assert "predictions: 3 symbols in 1 run(s)" in rolled.output
    assert prediction_versions(db) == ["1"]
    assert registry.by_alias(CHAMPION).version == "1"
    assert system_log(db)[-1] == (
        "ROLLED_BACK",
        "version 1 replaces 2 by hand: v2 misbehaves live",
    )
    # The new champion is on the asset's history, and every active symbol is predicted again.
    latest = instance.get_latest_materialization_event(champion_model.key).asset_materialization
    assert latest.metadata["model_version"].value == "1"
    context = dg.build_sensor_context(
        instance=instance, resources={"database": PostgresResource(url=database_url)}
    )
    # evaluate_tick, as the daemon does: Dagster 1.13's direct call of an asset sensor
    # cannot pass it resources.
    [request] = predictions_after_promotion.evaluate_tick(context).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "AAA"
    assert request.tags["dagster/asset_partition_range_end"] == "CCC"
    # Without the daemon, `mltrading materialize` predicts after the features itself.
    refreshed = CliRunner().invoke(main, ["materialize", "--asset", "features"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "predictions: 3 symbols in 1 run(s)" in refreshed.output
    with db.connect() as conn:
        versions = conn.execute(
            sa.text("SELECT DISTINCT model_version FROM public.model_predictions")
        ).scalars()
        assert list(versions) == ["1"]
    # Under the daemon, features runs are followed by predictions for their symbols.
    [followed] = predictions_after_features(
        success_sensor_context(instance, features_run, predictions_after_features)
    )
    assert followed.job_name == "model_predictions_job"
    assert followed.tags["dagster/asset_partition_range_start"] == "AAA"
    assert followed.tags["dagster/asset_partition_range_end"] == "DDD"

    # Retraining from the terminal (default settings: a boosted model) beats the rolled-back
    # stump and says so.
    trained = CliRunner().invoke(main, ["models", "train"])
    assert trained.exit_code == 0, trained.output
    assert re.search(r"promoted: roc_auc \S+ beats champion \S+ by", trained.output), trained.output
    assert registry.by_alias(CHAMPION).version == "4"
    assert "predictions: 3 symbols in 1 run(s)" in trained.output
    assert prediction_versions(db) == ["4"]
