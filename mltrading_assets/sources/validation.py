"""Bar validation: a source's output either passes whole or is rejected with every reason."""

import numpy as np
import pandas as pd

from mltrading_assets.sources.errors import BadBarsError
from mltrading_assets.trading_calendar import exchange_of, off_grid

BAR_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


def _examples(index: pd.Index, mask: np.ndarray, limit: int = 3) -> str:
    picked = [str(ts) for ts in index[mask][:limit]]
    more = int(mask.sum()) - len(picked)
    return ", ".join(picked) + (f" (+{more} more)" if more > 0 else "")


def validate_bars(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Check normalized bars and return them sorted; raise ``BadBarsError`` naming each problem.

    Bars are indexed by tz-aware bar start with columns ``BAR_COLUMNS``.
    """
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise BadBarsError(f"{symbol}: bars are missing columns {missing}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise BadBarsError(f"{symbol}: bars are not indexed by timestamps")
    if bars.index.tz is None:
        raise BadBarsError(
            f"{symbol}: timestamps have no time zone; cannot tell which hour a bar starts"
        )
    bars = bars.sort_index()
    index = bars.index
    problems = []
    duplicated = index.duplicated(keep=False)
    if duplicated.any():
        problems.append(f"duplicate timestamps at {_examples(index, duplicated)}")
    # One array stacked from single columns: a pandas column-list selection costs more than
    # every check below together (~0.35 ms against ~0.09), for the few bars of a refresh.
    values = np.column_stack(
        [bars[name].to_numpy(dtype=float) for name in (*PRICE_COLUMNS, "volume")]
    )
    prices, volume = values[:, :4], values[:, 4]
    nan = np.isnan(prices).any(axis=1) | np.isnan(volume)
    if nan.any():
        problems.append(f"missing (NaN) prices or volume at {_examples(index, nan)}")
    non_positive = (prices <= 0).any(axis=1)
    if non_positive.any():
        problems.append(f"zero or negative prices at {_examples(index, non_positive)}")
    infinite = np.isinf(prices).any(axis=1) | np.isinf(volume)
    if infinite.any():
        problems.append(f"infinite prices or volume at {_examples(index, infinite)}")
    open_, high, low, close = prices.T
    inverted = high < low
    if inverted.any():
        problems.append(f"high below low at {_examples(index, inverted)}")
    outside = ~inverted & ((open_ > high) | (close > high) | (open_ < low) | (close < low))
    if outside.any():
        problems.append(f"open or close outside [low, high] at {_examples(index, outside)}")
    negative_volume = volume < 0
    if negative_volume.any():
        problems.append(f"negative volume at {_examples(index, negative_volume)}")
    exchange = exchange_of(symbol)
    if exchange is not None:
        stray = off_grid(index.tz_convert("UTC"), exchange)
        if stray.any():
            problems.append(
                f"bars off the {exchange} hourly grid (a session's bars start at its open and "
                "every hour after, e.g. 9:30, 10:30 … 15:30 New York; is the UTC offset "
                f"right all year?) at {_examples(index, stray)}"
            )
    if problems:
        raise BadBarsError(f"{symbol}: rejected {len(bars)} bars: " + "; ".join(problems))
    return bars.tz_convert("UTC")
