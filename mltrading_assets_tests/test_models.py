"""The model engine without Dagster: no look-ahead in the dataset, cuts in time with an
embargo, and the promotion gate's verdicts."""

import numpy as np
import pandas as pd
import pytest

from mltrading_assets.features import compute_features
from mltrading_assets.models.dataset import LABEL, LABEL_TIME, build_dataset, model_features
from mltrading_assets.models.evaluation import baseline_probabilities, score
from mltrading_assets.models.gate import decide
from mltrading_assets.models.training import holdout_split, walk_forward_splits
from mltrading_assets_tests.conftest import load_yahoo_csv

FEATURES = model_features("core")


def feature_rows(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """What load_training_rows reads for one symbol: key, close and the features."""
    features = compute_features(bars)
    return (
        features.assign(symbol=symbol, close=bars["close"]).rename_axis("timestamp").reset_index()
    )


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_yahoo_csv("AAPL-daily.csv")


@pytest.mark.parametrize("horizon", [1, 3])
def test_labels_look_forward_exactly_horizon_bars_and_unknown_labels_are_dropped(bars, horizon):
    dataset = build_dataset(feature_rows(bars, "AAPL"), FEATURES, horizon)
    close = bars["close"]
    position = {t: i for i, t in enumerate(close.index)}
    for row in dataset.sample(50, random_state=1).itertuples():
        i = position[row.timestamp]
        assert row.label_time == close.index[i + horizon]
        assert row.label == int(close.iloc[i + horizon] > close.iloc[i])
    # The newest `horizon` bars have no known label yet; warm-up rows have NULL features.
    assert dataset["timestamp"].max() == close.index[-1 - horizon]
    assert dataset[FEATURES].notna().all().all()
    assert dataset["timestamp"].min() > close.index[0]


def test_features_of_a_bar_never_use_a_later_bar(bars):
    """Shift test: rewrite every bar after t, and no feature of t or earlier changes."""
    t = len(bars) - 40
    changed = bars.copy()
    changed.iloc[t + 1 :, :] = changed.iloc[t + 1 :, :] * 1.5
    before = build_dataset(feature_rows(bars, "AAPL"), FEATURES, 1)
    after = build_dataset(feature_rows(changed, "AAPL"), FEATURES, 1)
    cut = bars.index[t]
    left = before[before["timestamp"] <= cut].set_index("timestamp")[FEATURES]
    right = after[after["timestamp"] <= cut].set_index("timestamp")[FEATURES]
    pd.testing.assert_frame_equal(left, right)
    # ...while the label of bar t is about bar t + 1, which is now 50 % higher: up.
    assert after.loc[after["timestamp"] == cut, LABEL].item() == 1


def two_symbols(bars: pd.DataFrame) -> pd.DataFrame:
    rows = pd.concat([feature_rows(bars, "AAPL"), feature_rows(bars * 2, "MSFT")])
    return build_dataset(rows, FEATURES, 2)


def test_walk_forward_cuts_are_in_time_across_symbols_with_an_embargo(bars):
    dataset = two_symbols(bars)
    embargo = 5
    holdout = holdout_split(dataset["timestamp"], 60, embargo)
    splits = walk_forward_splits(dataset["timestamp"], holdout.test_start, 3, embargo)
    assert len(splits) == 3
    hours = np.sort(dataset["timestamp"].unique())
    for split in [*splits, holdout]:
        train = dataset[split.train_rows(dataset)]
        test = dataset[split.test_rows(dataset)]
        # Every hour on one side only, for every symbol.
        assert not set(train["timestamp"]) & set(test["timestamp"])
        assert set(test.groupby("timestamp")["symbol"].nunique()) == {2}
        # The embargo: `embargo` hours between the last training hour and the cut.
        gap = np.searchsorted(hours, split.test_start) - np.searchsorted(
            hours, train["timestamp"].max()
        )
        assert gap > embargo
        # Purged: no training label is known only after the cut.
        assert (train[LABEL_TIME] < split.test_start).all()
    # Expanding windows, each validating after the last.
    assert [s.test_start for s in splits] == sorted(s.test_start for s in splits)
    assert splits[-1].test_end <= holdout.test_start


def test_too_short_a_history_is_refused_saying_why(bars):
    dataset = two_symbols(bars.iloc[:600])
    with pytest.raises(ValueError, match="too few for a holdout of 5000"):
        holdout_split(dataset["timestamp"], 5000, 1)


SCORES = {
    "always_up": {"roc_auc": 0.5, "log_loss": 0.6931, "accuracy": 0.52, "ic": 0.0},
    "last_direction": {"roc_auc": 0.51, "log_loss": 0.6930, "accuracy": 0.51, "ic": 0.01},
}


def test_the_first_model_needs_to_beat_the_baselines_only():
    good = {
        **SCORES,
        "candidate": {"roc_auc": 0.53, "log_loss": 0.69, "accuracy": 0.53, "ic": 0.04},
    }
    decision = decide(good, "roc_auc", margin=0.01)
    assert decision.promote and "first model" in decision.reason
    weak = {**good, "candidate": {**good["candidate"], "roc_auc": 0.505}}
    decision = decide(weak, "roc_auc", margin=0.0)
    assert not decision.promote
    assert "does not beat the last_direction baseline (0.5100)" in decision.reason


def test_a_candidate_must_beat_the_champion_by_the_margin():
    scores = {
        **SCORES,
        "champion": {"roc_auc": 0.540, "log_loss": 0.688, "accuracy": 0.53, "ic": 0.05},
        "candidate": {"roc_auc": 0.545, "log_loss": 0.687, "accuracy": 0.54, "ic": 0.05},
    }
    assert decide(scores, "roc_auc", margin=0.004).promote
    refused = decide(scores, "roc_auc", margin=0.01)
    assert not refused.promote
    assert refused.reason == (
        "roc_auc 0.5450 vs champion 0.5400: better by +0.0050, the margin is 0.0100"
    )
    # Lower is better for log loss: 0.687 beats 0.688 by 0.001.
    assert decide(scores, "log_loss", margin=0.0009).promote
    assert not decide(scores, "log_loss", margin=0.0015).promote


def test_scores_and_baselines_on_a_known_holdout():
    holdout = pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-05 15:00", periods=4, freq="h", tz="UTC"),
            LABEL: [1, 0, 1, 0],
            "forward_return": [0.02, -0.01, 0.01, -0.03],
            "returns": [0.01, 0.02, -0.01, -0.02],
        }
    )
    perfect = score(np.array([0.9, 0.2, 0.7, 0.1]), holdout)
    assert perfect["roc_auc"] == 1.0 and perfect["accuracy"] == 1.0
    assert perfect["ic"] == pytest.approx(1.0)
    train = holdout.assign(**{LABEL: [1, 1, 1, 0]})
    baselines = baseline_probabilities(train, holdout)
    assert (baselines["always_up"] == 0.75).all()
    always_up = score(baselines["always_up"], holdout)
    assert always_up["roc_auc"] == 0.5 and always_up["accuracy"] == 0.5
    # Up after an up bar, down after a down bar.
    assert list(baselines["last_direction"] > 0.5) == [True, True, False, False]
