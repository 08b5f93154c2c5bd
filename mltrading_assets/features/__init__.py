"""Pure feature library: DataFrame in, DataFrame out. No Dagster import, notebook-friendly."""

import numpy as np
import pandas as pd

from mltrading_assets.features.contract import (
    ALL_FEATURE_COLUMNS,
    CORE_COLUMNS,
    FEATURE_VERSION,
    LOOKBACK_BARS,
    columns_for,
)
from mltrading_assets.features.core import core_features
from mltrading_assets.features.extended import CUMULATIVE_COLUMNS, extended_features

__all__ = [
    "ALL_FEATURE_COLUMNS",
    "CUMULATIVE_COLUMNS",
    "CORE_COLUMNS",
    "FEATURE_VERSION",
    "LOOKBACK_BARS",
    "compute_features",
]

_REQUIRED = ["open", "high", "low", "close", "volume"]


def compute_features(
    bars: pd.DataFrame, feature_set: str = "core", carry: dict[str, float] | None = None
) -> pd.DataFrame:
    """Compute the feature contract for the hourly bars of one symbol.

    ``bars`` is indexed by UTC bar start, sorted, with columns ``open high low close volume``.
    Returns a frame on the same index with exactly the contract's columns of ``feature_set``;
    undefined values (warm-up, division by zero) are NaN, never inf.

    Running totals (``CUMULATIVE_COLUMNS``, e.g. ``obv``) start at the first bar given;
    when ``bars`` is a lookback window of a longer history, ``carry`` maps each to its value
    at that first bar (as computed over the whole history), and the result matches it.
    """
    columns = columns_for(feature_set)
    missing = [c for c in _REQUIRED if c not in bars.columns]
    if missing:
        raise ValueError(f"bars are missing columns: {', '.join(missing)}")
    if not isinstance(bars.index, pd.DatetimeIndex) or bars.index.tz is None:
        raise ValueError("bars must be indexed by a timezone-aware DatetimeIndex (UTC bar start)")
    if not bars.index.is_monotonic_increasing:
        raise ValueError("bars must be sorted by bar start")

    values = core_features(bars)
    if feature_set == "extended":
        values.update(extended_features(bars, carry))
    # One float64 block, built in numpy: a frame from a dict of columns, then astype and
    # replace, cost more than all the indicators together.
    matrix = np.column_stack([np.asarray(values[name], dtype=np.float64) for name in columns])
    matrix[np.isinf(matrix)] = np.nan
    return pd.DataFrame(matrix, index=bars.index, columns=columns)
