"""Walk-forward training split by timestamp across all symbols, with an embargo.

Every split is a cut in time: all symbols' rows of one hour sit on the same side, and the
``embargo`` hours before each cut are dropped from the training side, along with any row whose
label is only known after the cut (purging), so no label looks into the validation period.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mltrading_assets.models.dataset import LABEL, LABEL_TIME
from mltrading_assets.models.evaluation import log_loss, roc_auc

ALGORITHMS = ("lightgbm", "hist_gradient_boosting")


@dataclass(frozen=True)
class Split:
    """Rows before ``train_end`` (exclusive, embargo applied) train; rows in
    [``test_start``, ``test_end``) are scored."""

    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp | None

    def train_rows(self, dataset: pd.DataFrame) -> pd.Series:
        return (dataset["timestamp"] < self.train_end) & (dataset[LABEL_TIME] < self.test_start)

    def test_rows(self, dataset: pd.DataFrame) -> pd.Series:
        rows = dataset["timestamp"] >= self.test_start
        if self.test_end is not None:
            rows &= dataset["timestamp"] < self.test_end
        return rows


def _cut(hours: np.ndarray, start: int, end: int | None, embargo: int) -> Split:
    train_end = hours[max(start - embargo, 0)]
    return Split(
        pd.Timestamp(train_end),
        pd.Timestamp(hours[start]),
        None if end is None or end >= len(hours) else pd.Timestamp(hours[end]),
    )


def holdout_split(timestamps: pd.Series, holdout_bars: int, embargo: int) -> Split:
    """The most recent ``holdout_bars`` hours against everything before them."""
    hours = np.sort(timestamps.unique())
    if len(hours) < holdout_bars + embargo + 2:
        raise ValueError(
            f"the dataset spans {len(hours)} hours: too few for a holdout of {holdout_bars} "
            f"and an embargo of {embargo}"
        )
    return _cut(hours, len(hours) - holdout_bars, None, embargo)


def walk_forward_splits(
    timestamps: pd.Series, before: pd.Timestamp, folds: int, embargo: int
) -> list[Split]:
    """``folds`` expanding-window splits of the hours before ``before``: fold k trains on
    the first k blocks (minus the embargo) and validates on block k + 1."""
    hours = np.sort(timestamps[timestamps < before].unique())
    block = len(hours) // (folds + 1)
    if block <= embargo:
        raise ValueError(
            f"{len(hours)} hours before the holdout are too few for {folds} folds with an "
            f"embargo of {embargo}"
        )
    return [_cut(hours, k * block, (k + 1) * block, embargo) for k in range(1, folds + 1)]


@dataclass(frozen=True)
class TrainingSettings:
    algorithm: str = "lightgbm"
    iterations: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 200
    l2_regularization: float = 1.0
    seed: int = 7

    def params(self) -> dict[str, object]:
        return dict(self.__dict__)


def new_model(settings: TrainingSettings):
    """An unfitted classifier; both choices are seeded and single-machine reproducible."""
    if settings.algorithm == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=settings.iterations,
            learning_rate=settings.learning_rate,
            max_leaf_nodes=settings.max_leaf_nodes,
            min_samples_leaf=settings.min_samples_leaf,
            l2_regularization=settings.l2_regularization,
            early_stopping=False,
            random_state=settings.seed,
        )
    if settings.algorithm == "lightgbm":
        import lightgbm

        return lightgbm.LGBMClassifier(
            n_estimators=settings.iterations,
            learning_rate=settings.learning_rate,
            num_leaves=settings.max_leaf_nodes,
            min_child_samples=settings.min_samples_leaf,
            reg_lambda=settings.l2_regularization,
            random_state=settings.seed,
            deterministic=True,
            verbose=-1,
        )
    raise ValueError(
        f"unknown algorithm {settings.algorithm!r}: use one of {', '.join(ALGORITHMS)}"
    )


def fit(settings: TrainingSettings, x: np.ndarray, y: np.ndarray):
    if len(np.unique(y)) < 2:
        raise ValueError("the training rows hold one class only: nothing to learn")
    return new_model(settings).fit(x, y)


def predict_up(model, x: pd.DataFrame | np.ndarray) -> np.ndarray:
    """P(up) for each row of ``x`` (the model's features, in its order)."""
    return model.predict_proba(np.asarray(x, dtype=np.float32))[:, 1]


@dataclass
class TrainingResult:
    model: object
    features: list[str]
    holdout: Split
    folds: list[dict[str, object]] = field(default_factory=list)
    train_rows: int = 0
    seconds: float = 0.0


def train(
    dataset: pd.DataFrame,
    features: list[str],
    settings: TrainingSettings,
    holdout_bars: int,
    embargo: int,
    folds: int,
) -> TrainingResult:
    """Validate walk-forward on the hours before the holdout, then fit the model on all of
    them; the holdout is left for the comparison with the champion."""
    started = time.perf_counter()
    # One float32 copy of the features, sliced by boolean masks: per-fold DataFrame copies
    # held ~2 GB at 1,000 symbols.
    x = dataset[features].to_numpy(np.float32)
    y = dataset[LABEL].to_numpy()
    holdout = holdout_split(dataset["timestamp"], holdout_bars, embargo)
    fold_scores = []
    for number, split in enumerate(
        walk_forward_splits(dataset["timestamp"], holdout.test_start, folds, embargo), start=1
    ):
        train_rows = split.train_rows(dataset).to_numpy()
        test_rows = split.test_rows(dataset).to_numpy()
        model = fit(settings, x[train_rows], y[train_rows])
        labels = y[test_rows]
        p_up = predict_up(model, x[test_rows])
        fold_scores.append(
            {
                "fold": number,
                "train_until": split.train_end.isoformat(),
                "validate_from": split.test_start.isoformat(),
                "train_rows": int(train_rows.sum()),
                "validate_rows": int(test_rows.sum()),
                "roc_auc": roc_auc(labels, p_up),
                "log_loss": log_loss(labels, p_up),
            }
        )
    final_rows = holdout.train_rows(dataset).to_numpy()
    model = fit(settings, x[final_rows], y[final_rows])
    return TrainingResult(
        model=model,
        features=features,
        holdout=holdout,
        folds=fold_scores,
        train_rows=int(final_rows.sum()),
        seconds=time.perf_counter() - started,
    )
