"""The training dataset: one row per (symbol, bar) with the contract's scale-free features and
a label that is known only after the bar (did the close rise over the next ``horizon`` bars?).

Point in time: the features of bar t come from bars up to t (the feature library's contract);
the label of bar t comes from bar t + horizon of the same symbol, so a row exists only once
that bar is stored and complete; warm-up rows (a NULL feature) are left out.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrading_assets.features.contract import FEATURE_SETS

KEY_COLUMNS = ["symbol", "timestamp"]
LABEL = "label"
FORWARD_RETURN = "forward_return"
LABEL_TIME = "label_time"

# Price-level columns are left to the dataset but out of the model: pooled across symbols, a
# moving average of 180 says which symbol a row is, not where it is going. Every feature the
# model sees is scale-free (a return, a ratio, a position in a band, a clock feature).
PRICE_LEVEL_COLUMNS = {
    "sma_24",
    "sma_120",
    "sma_480",
    "bb_upper",
    "bb_lower",
    "macd",
    "macd_signal",
    "macd_hist",
    "atr_14",
    "obv",
    "vwap_session",
    "kc_upper_20",
    "kc_lower_20",
    "donchian_high_20",
    "donchian_low_20",
}


def model_features(feature_set: str) -> list[str]:
    """The scale-free features of ``feature_set`` a model is trained on."""
    return [c for c in FEATURE_SETS[feature_set] if c not in PRICE_LEVEL_COLUMNS]


def add_labels(bars: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """``bars`` (symbol, timestamp, close, features; complete bars only) with the forward
    return over ``horizon`` bars of the same symbol, its sign as ``label`` (1 = up) and the
    time it becomes known. Rows whose label is not known yet are dropped."""
    if horizon < 1:
        raise ValueError(f"label horizon must be at least 1 bar, got {horizon}")
    frame = bars.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    by_symbol = frame.groupby("symbol", sort=False)
    future_close = by_symbol["close"].shift(-horizon)
    frame[FORWARD_RETURN] = future_close / frame["close"] - 1.0
    frame[LABEL_TIME] = by_symbol["timestamp"].shift(-horizon)
    frame = frame[frame[FORWARD_RETURN].notna()].copy()
    frame[LABEL] = (frame[FORWARD_RETURN] > 0).astype(np.int8)
    return frame.reset_index(drop=True)


def build_dataset(bars: pd.DataFrame, feature_columns: list[str], horizon: int) -> pd.DataFrame:
    """Labelled rows with every feature defined (warm-up rows left out)."""
    missing = [c for c in ["close", *KEY_COLUMNS, *feature_columns] if c not in bars.columns]
    if missing:
        raise KeyError(f"feature rows lack the column(s) {', '.join(missing)}")
    labelled = add_labels(bars, horizon)
    complete = labelled[feature_columns].notna().all(axis=1)
    return labelled[complete].reset_index(drop=True)


@dataclass(frozen=True)
class DatasetSummary:
    rows: int
    symbols: int
    first_bar: pd.Timestamp | None
    last_bar: pd.Timestamp | None
    share_up: float

    def as_metadata(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "symbols": self.symbols,
            "first_bar": self.first_bar.isoformat() if self.first_bar is not None else "",
            "last_bar": self.last_bar.isoformat() if self.last_bar is not None else "",
            "share_up": round(self.share_up, 4),
        }


def summarize(dataset: pd.DataFrame) -> DatasetSummary:
    if dataset.empty:
        return DatasetSummary(0, 0, None, None, float("nan"))
    return DatasetSummary(
        rows=len(dataset),
        symbols=dataset["symbol"].nunique(),
        first_bar=dataset["timestamp"].min(),
        last_bar=dataset["timestamp"].max(),
        share_up=float(dataset[LABEL].mean()),
    )
