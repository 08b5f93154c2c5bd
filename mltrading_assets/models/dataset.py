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


def build_dataset(bars: pd.DataFrame, feature_columns: list[str], horizon: int) -> pd.DataFrame:
    """``bars`` (symbol, timestamp, close, features; complete bars only) as labelled rows:
    the forward return over ``horizon`` bars of the same symbol, its sign as ``label``
    (1 = up) and the time it becomes known. Rows whose label is not known yet and warm-up
    rows (a feature undefined) are left out.

    One filtered copy of the rows: at 1,000 symbols a year, each extra copy is ~250 MB.
    """
    if horizon < 1:
        raise ValueError(f"label horizon must be at least 1 bar, got {horizon}")
    missing = [c for c in ["close", *KEY_COLUMNS, *feature_columns] if c not in bars.columns]
    if missing:
        raise KeyError(f"feature rows lack the column(s) {', '.join(missing)}")
    frame = bars.sort_values(KEY_COLUMNS, kind="stable", ignore_index=True)
    by_symbol = frame.groupby("symbol", sort=False, observed=True)
    forward = by_symbol["close"].shift(-horizon).to_numpy() / frame["close"].to_numpy() - 1.0
    label_time = by_symbol["timestamp"].shift(-horizon)
    keep = ~np.isnan(forward) & frame[feature_columns].notna().all(axis=1).to_numpy()
    dataset = frame.loc[keep].reset_index(drop=True)
    dataset[FORWARD_RETURN] = forward[keep]
    dataset[LABEL_TIME] = label_time[keep].to_numpy()
    dataset[LABEL] = (dataset[FORWARD_RETURN] > 0).astype(np.int8)
    return dataset


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
