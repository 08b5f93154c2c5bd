"""Scores of a direction model on a holdout, the naive baselines beside it, and a plot."""

import io
import math

import numpy as np
import pandas as pd

from mltrading_assets.models.dataset import FORWARD_RETURN, LABEL

METRICS = ("roc_auc", "log_loss", "accuracy", "ic")
HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False, "accuracy": True, "ic": True}
BASELINES = ("always_up", "last_direction")


# scikit-learn is imported where a score is computed: imported with the module it cost ~0.8 s
# in every run process, forkserver and code server, most of which never score a model.


def roc_auc(labels: np.ndarray, p_up: np.ndarray) -> float:
    """ROC AUC, or 0.5 (no skill) when the rows hold one class only."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, p_up)) if len(np.unique(labels)) > 1 else 0.5


def log_loss(labels: np.ndarray, p_up: np.ndarray) -> float:
    """Log loss of the predicted probability of an up move (both classes always counted)."""
    from sklearn.metrics import log_loss as sklearn_log_loss

    return float(sklearn_log_loss(labels, p_up, labels=[0, 1]))


def score(p_up: np.ndarray, holdout: pd.DataFrame) -> dict[str, float]:
    """Accuracy (at 0.5), log loss, ROC AUC, and the information coefficient: the rank
    correlation of the predicted probability with the realized forward return."""
    from sklearn.metrics import accuracy_score

    labels = holdout[LABEL].to_numpy()
    p_up = np.clip(np.asarray(p_up, dtype=np.float64), 1e-6, 1 - 1e-6)
    constant = np.ptp(p_up) == 0
    ic = (
        0.0
        if constant
        else float(pd.Series(p_up).corr(pd.Series(holdout[FORWARD_RETURN].to_numpy()), "spearman"))
    )
    return {
        "roc_auc": roc_auc(labels, p_up),
        "log_loss": log_loss(labels, p_up),
        "accuracy": float(accuracy_score(labels, p_up > 0.5)),
        "ic": 0.0 if math.isnan(ic) else ic,
    }


def baseline_probabilities(train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, np.ndarray]:
    """What a model without features would say, with rates learnt on the training rows:
    ``always_up`` (the share of up bars, always above one half: up) and ``last_direction``
    (the same direction as the bar's own return, at the rate that held in training)."""
    share_up = float(train[LABEL].mean())
    last_up_train = train["returns"] > 0
    up_after_up = float(train.loc[last_up_train, LABEL].mean()) if last_up_train.any() else 0.5
    up_after_down = (
        float(train.loc[~last_up_train, LABEL].mean()) if (~last_up_train).any() else 0.5
    )
    last_up = holdout["returns"].to_numpy() > 0
    return {
        # Never below one half: "always up" calls every bar up, whatever the base rate.
        "always_up": np.full(len(holdout), max(share_up, 0.5 + 1e-6)),
        "last_direction": np.where(
            last_up, max(up_after_up, 0.5 + 1e-6), min(up_after_down, 0.5 - 1e-6)
        ),
    }


def long_short_returns(p_up: np.ndarray, holdout: pd.DataFrame) -> pd.Series:
    """Mean return per hour of going long where the model says up and short where it says
    down, equally weighted across symbols (before costs; overlapping horizons)."""
    side = np.where(np.asarray(p_up) > 0.5, 1.0, -1.0)
    pnl = pd.Series(side * holdout[FORWARD_RETURN].to_numpy(), index=holdout["timestamp"])
    return pnl.groupby(level=0).mean().sort_index()


def comparison_png(curves: dict[str, pd.Series], title: str) -> bytes:
    """Cumulative long/short return of each model over the holdout (drawn once per
    evaluation, so matplotlib's ~0.3 s is no cost here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7.6, 3.2), dpi=100)
    try:
        for name, curve in curves.items():
            axes.plot(curve.index, curve.cumsum() * 100, label=name, linewidth=1.4)
        axes.axhline(0, color="#888888", linewidth=0.8)
        axes.set_ylabel("cumulative return, %")
        axes.set_title(title, fontsize=10)
        axes.legend(loc="upper left", fontsize=8, frameon=False)
        axes.grid(alpha=0.3)
        figure.autofmt_xdate()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
