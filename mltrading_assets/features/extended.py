"""The extended set, with pandas-ta's definitions (pandas-ta-classic, same API)."""

import numpy as np
import pandas as pd
import pandas_ta_classic as ta

from mltrading_assets.trading_calendar import NEW_YORK


def _session_vwap(bars: pd.DataFrame) -> pd.Series:
    # Anchored at each trading day's open: cumulative typical price x volume per NY date.
    typical = (bars["high"] + bars["low"] + bars["close"]) / 3
    day = bars.index.tz_convert(NEW_YORK).date
    pv = (typical * bars["volume"]).groupby(day).cumsum()
    volume = bars["volume"].groupby(day).cumsum()
    return pv / volume.replace(0, np.nan)


# Running totals: their value at a bar depends on every bar before it, not on a lookback.
CUMULATIVE_COLUMNS = ("obv",)


def extended_features(
    bars: pd.DataFrame, carry: dict[str, float] | None = None
) -> dict[str, np.ndarray]:
    """The extended columns. A running total (``CUMULATIVE_COLUMNS``) starts at the first
    bar of ``bars``; ``carry`` gives its value there when ``bars`` is a window of a longer
    history, so a window and the whole history give the same numbers."""
    high, low, close, volume = bars["high"], bars["low"], bars["close"], bars["volume"]
    stoch = ta.stoch(high, low, close, k=14, d=3, smooth_k=3)
    keltner = ta.kc(high, low, close, length=20)
    donchian = ta.donchian(high, low, lower_length=20, upper_length=20)
    columns = {
        "rsi_14": ta.rsi(close, length=14),
        "stoch_k_14_3": stoch.iloc[:, 0],
        "stoch_d_14_3": stoch.iloc[:, 1],
        "adx_14": ta.adx(high, low, close, length=14).iloc[:, 0],
        "obv": ta.obv(close, volume),
        "mfi_14": ta.mfi(high, low, close, volume, length=14),
        "cci_20": ta.cci(high, low, close, length=20),
        "roc_10": ta.roc(close, length=10),
        "vwap_session": _session_vwap(bars),
        "kc_lower_20": keltner.iloc[:, 0],
        "kc_upper_20": keltner.iloc[:, 2],
        "donchian_low_20": donchian.iloc[:, 0],
        "donchian_high_20": donchian.iloc[:, 2],
        "zscore_close_20": ta.zscore(close, length=20),
    }
    arrays = {name: pd.Series(values).to_numpy(dtype=float) for name, values in columns.items()}
    for name, value in (carry or {}).items():
        if name in CUMULATIVE_COLUMNS and len(arrays[name]) and np.isfinite(value):
            arrays[name] = arrays[name] + (value - arrays[name][0])
    return arrays
