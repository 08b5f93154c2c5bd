"""The 37 core indicators, on TA-Lib kernels and numpy (no Dagster here)."""

import numpy as np
import pandas as pd
import talib

from mltrading_assets.trading_calendar import NEW_YORK, is_in_regular_session

# A price difference smaller than this fraction of close is floating-point noise from
# rolling sums over flat prices, and counts as zero: a flat Bollinger band or 14-bar range
# gives NULL, not a huge or undefined ratio.
FLAT_RANGE_TOLERANCE = 1e-9


def _cross(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    return np.sign(fast - slow)


def _ratio_of_range(numerator: np.ndarray, width: np.ndarray, close: np.ndarray) -> np.ndarray:
    flat = np.abs(width) < FLAT_RANGE_TOLERANCE * close
    with np.errstate(divide="ignore", invalid="ignore"):
        result = numerator / width
    result[flat] = np.nan
    return result


def basic_price(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict:
    prev_close = np.concatenate(([np.nan], close[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = close / prev_close - 1.0
        log_returns = np.log(close / prev_close)
    acceleration = returns - np.concatenate(([np.nan], returns[:-1]))
    return {
        "returns": returns,
        "log_returns": log_returns,
        "high_low_pct": (high - low) / close,
        "open_close_pct": (close - open_) / open_,
        "price_acceleration": acceleration,
        "returns_sign": np.sign(returns),
    }


def time_features(index: pd.DatetimeIndex) -> dict:
    local = index.tz_convert(NEW_YORK)
    hour = local.hour.to_numpy(dtype=float)
    day_of_week = local.day_of_week.to_numpy(dtype=float)
    return {
        "hour": hour,
        "day_of_week": day_of_week,
        "is_market_open": is_in_regular_session(index).astype(float),
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "dow_sin": np.sin(2 * np.pi * day_of_week / 7),
        "dow_cos": np.cos(2 * np.pi * day_of_week / 7),
    }


def moving_averages(close: np.ndarray) -> dict:
    out: dict[str, np.ndarray] = {}
    for n in (24, 120, 480):
        sma = talib.SMA(close, timeperiod=n)
        out[f"sma_{n}"] = sma
        out[f"price_to_sma_{n}"] = close / sma
    out["sma_cross_24_120"] = _cross(out["sma_24"], out["sma_120"])
    out["sma_cross_120_480"] = _cross(out["sma_120"], out["sma_480"])
    return out


def technical(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict:
    # TA-Lib's STDDEV inside BBANDS is the population deviation (ddof=0), as the contract asks.
    bb_upper, bb_middle, bb_lower = talib.BBANDS(
        close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA
    )
    width = bb_upper - bb_lower
    # TA-Lib's MACD seeds its fast EMA late so both lines start together; the contract wants
    # each EMA seeded with the mean of its own first n inputs, which plain EMA does.
    macd = talib.EMA(close, timeperiod=12) - talib.EMA(close, timeperiod=26)
    macd_signal = talib.EMA(macd, timeperiod=9)
    atr = talib.ATR(high, low, close, timeperiod=14)
    highest = talib.MAX(high, timeperiod=14)
    lowest = talib.MIN(low, timeperiod=14)
    return {
        "bb_upper": bb_upper,
        "bb_lower": bb_lower,
        "bb_position": _ratio_of_range(close - bb_lower, width, close),
        "bb_squeeze": width / bb_middle,
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd - macd_signal,
        "macd_normalized": macd / close,
        "atr_14": atr,
        "atr_normalized": atr / close,
        "williams_r": -100.0 * _ratio_of_range(highest - close, highest - lowest, close),
    }


def volatility(log_returns: np.ndarray, returns: np.ndarray) -> dict:
    log_r = pd.Series(log_returns)
    out = {f"volatility_{n}": log_r.rolling(n).std(ddof=1).to_numpy() for n in (24, 120, 480)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["volatility_ratio_24_120"] = out["volatility_24"] / out["volatility_120"]
    out["returns_variance_24"] = pd.Series(returns).rolling(24).var(ddof=1).to_numpy()
    return out


def core_features(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    open_, high, low, close = (
        bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close")
    )
    basic = basic_price(open_, high, low, close)
    return {
        **basic,
        **time_features(bars.index),
        **moving_averages(close),
        **technical(high, low, close),
        **volatility(basic["log_returns"], basic["returns"]),
    }
