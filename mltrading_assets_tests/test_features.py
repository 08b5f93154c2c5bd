"""Every contract column against an independent computation (numpy loops or TA-Lib) on real
Yahoo bars; never against the feature library's own earlier output."""

import numpy as np
import pandas as pd
import pandas_ta_classic as ta
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from mltrading_assets.features import CORE_COLUMNS, compute_features
from mltrading_assets.features.contract import EXTENDED_ONLY_COLUMNS
from mltrading_assets_tests.conftest import load_yahoo_csv


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    # 3,379 real daily AAPL bars: long enough for every 480-bar window, with real gaps.
    return load_yahoo_csv("AAPL-daily.csv")


@pytest.fixture(scope="module")
def features(bars) -> pd.DataFrame:
    return compute_features(bars)


def rolling(values: np.ndarray, n: int, fn) -> np.ndarray:
    out = np.full(len(values), np.nan)
    out[n - 1 :] = fn(sliding_window_view(values, n), axis=1)
    return out


def ema(values: np.ndarray, n: int) -> np.ndarray:
    """EMA with alpha 2/(n+1), seeded with the mean of its first n defined inputs."""
    out = np.full(len(values), np.nan)
    first = np.flatnonzero(~np.isnan(values))[0]
    seed_at = first + n - 1
    out[seed_at] = values[first : seed_at + 1].mean()
    alpha = 2.0 / (n + 1)
    for i in range(seed_at + 1, len(values)):
        out[i] = alpha * values[i] + (1 - alpha) * out[i - 1]
    return out


def wilder_atr(high, low, close, n=14) -> np.ndarray:
    prev = np.r_[np.nan, close[:-1]]
    tr = np.nanmax(np.vstack([high - low, np.abs(high - prev), np.abs(low - prev)]), axis=0)
    tr[0] = np.nan
    out = np.full(len(close), np.nan)
    out[n] = tr[1 : n + 1].mean()
    for i in range(n + 1, len(close)):
        out[i] = out[i - 1] + (tr[i] - out[i - 1]) / n
    return out


def assert_matches(actual: pd.Series, expected: np.ndarray, rtol: float = 1e-9) -> None:
    actual = actual.to_numpy(dtype=float)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NULLs at different bars"
    defined = ~np.isnan(expected)
    np.testing.assert_allclose(actual[defined], expected[defined], rtol=rtol, atol=1e-12)


def test_output_has_exactly_the_contract_columns_on_the_input_index(bars, features):
    assert list(features.columns) == CORE_COLUMNS
    assert len(CORE_COLUMNS) == 37
    assert features.index.equals(bars.index)
    assert not np.isinf(features.to_numpy()).any()


def test_basic_price_columns(bars, features):
    o, h, lo, c = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    prev = np.r_[np.nan, c[:-1]]
    returns = c / prev - 1
    assert_matches(features["returns"], returns)
    assert_matches(features["log_returns"], np.log(c / prev))
    assert_matches(features["high_low_pct"], (h - lo) / c)
    assert_matches(features["open_close_pct"], (c - o) / o)
    assert_matches(features["price_acceleration"], returns - np.r_[np.nan, returns[:-1]])
    assert_matches(features["returns_sign"], np.sign(returns))


@pytest.mark.parametrize("n", [24, 120, 480])
def test_moving_averages_and_crosses(bars, features, n):
    close = bars["close"].to_numpy()
    sma = rolling(close, n, np.mean)
    assert_matches(features[f"sma_{n}"], sma)
    assert_matches(features[f"price_to_sma_{n}"], close / sma)
    assert features[f"sma_{n}"].iloc[: n - 1].isna().all()
    sma = {k: rolling(close, k, np.mean) for k in (24, 120, 480)}
    assert_matches(features["sma_cross_24_120"], np.sign(sma[24] - sma[120]))
    assert_matches(features["sma_cross_120_480"], np.sign(sma[120] - sma[480]))


def test_bollinger_uses_population_std(bars, features):
    close = bars["close"].to_numpy()
    mid = rolling(close, 20, np.mean)
    std = rolling(close, 20, lambda w, axis: w.std(axis=axis, ddof=0))
    upper, lower = mid + 2 * std, mid - 2 * std
    assert_matches(features["bb_upper"], upper)
    assert_matches(features["bb_lower"], lower)
    assert_matches(features["bb_position"], (close - lower) / (upper - lower), rtol=1e-7)
    assert_matches(features["bb_squeeze"], (upper - lower) / mid, rtol=1e-7)


def test_macd_each_ema_seeded_with_its_own_first_mean(bars, features):
    close = bars["close"].to_numpy()
    macd = ema(close, 12) - ema(close, 26)
    signal = ema(macd, 9)
    assert_matches(features["macd"], macd)
    assert_matches(features["macd_signal"], signal)
    assert_matches(features["macd_hist"], macd - signal, rtol=1e-7)
    assert_matches(features["macd_normalized"], macd / close)


def test_wilder_atr_and_williams_r(bars, features):
    h, lo, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
    atr = wilder_atr(h, lo, c)
    assert_matches(features["atr_14"], atr)
    assert_matches(features["atr_normalized"], atr / c)
    highest, lowest = rolling(h, 14, np.max), rolling(lo, 14, np.min)
    assert_matches(features["williams_r"], -100 * (highest - c) / (highest - lowest))
    defined = features["williams_r"].dropna()
    assert defined.between(-100, 0).all()


def test_volatility_sample_std_of_log_returns(bars, features):
    c = bars["close"].to_numpy()
    log_r = np.log(c / np.r_[np.nan, c[:-1]])
    returns = c / np.r_[np.nan, c[:-1]] - 1
    vol = {n: rolling(log_r, n, lambda w, axis: w.std(axis=axis, ddof=1)) for n in (24, 120, 480)}
    for n, expected in vol.items():
        assert_matches(features[f"volatility_{n}"], expected, rtol=1e-7)
    assert_matches(features["volatility_ratio_24_120"], vol[24] / vol[120], rtol=1e-7)
    expected_var = rolling(returns, 24, lambda w, axis: w.var(axis=axis, ddof=1))
    assert_matches(features["returns_variance_24"], expected_var, rtol=1e-7)


def test_time_columns_use_new_york_local_time():
    # Bars around the 2026-03-08 DST change, a holiday (2025-12-25) and an early close
    # (2025-11-28, the day after Thanksgiving, NYSE closes at 13:00).
    stamps = pd.DatetimeIndex(
        [
            "2026-03-06 14:30",  # Fri 9:30 EST, open
            "2026-03-09 13:30",  # Mon 9:30 EDT, open
            "2026-03-09 20:30",  # Mon 16:30 EDT, closed
            "2025-12-25 15:30",  # Christmas, closed
            "2025-11-28 17:30",  # 12:30 on an early-close day, open
            "2025-11-28 18:30",  # 13:30 on an early-close day, closed
            "2026-03-07 15:30",  # Saturday
        ],
        tz="UTC",
    )
    bars = pd.DataFrame(
        {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100.0}, index=stamps
    ).sort_index()
    f = compute_features(bars).loc[stamps]
    assert f["hour"].tolist() == [9, 9, 16, 10, 12, 13, 10]
    assert f["day_of_week"].tolist() == [4, 0, 0, 3, 4, 4, 5]
    assert f["is_market_open"].tolist() == [1, 1, 0, 0, 1, 0, 0]
    np.testing.assert_allclose(f["hour_sin"], np.sin(2 * np.pi * f["hour"] / 24))
    np.testing.assert_allclose(f["dow_cos"], np.cos(2 * np.pi * f["day_of_week"] / 7))


def test_flat_prices_give_null_not_noise():
    # A flat stretch after movement: rolling sums leave ~1e-15 noise in band widths and ranges.
    index = pd.date_range("2026-01-05 14:30", periods=80, freq="h", tz="UTC")
    close = np.r_[np.linspace(10, 12, 40), np.full(40, 12.3)]
    bars = pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index
    )
    f = compute_features(bars)
    assert f["bb_position"].iloc[-15:].isna().all()
    assert f["williams_r"].iloc[-15:].isna().all()
    assert f["bb_position"].iloc[25:35].notna().all()


def test_incremental_window_equals_full_recompute():
    bars = load_yahoo_csv("AAPL-daily.csv")
    full = compute_features(bars)
    for new in (1, 7, 50):
        window = bars.iloc[-(600 + new) :]
        part = compute_features(window).iloc[-new:]
        expected = full.iloc[-new:]
        np.testing.assert_allclose(part.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)


def test_extended_window_with_carried_running_totals_equals_full_recompute():
    # obv is a running total: a 600-bar window alone restarts it; carrying its value at the
    # window's first bar (what the worker reads back from the table) continues it.
    bars = load_yahoo_csv("AAPL-daily.csv")
    full = compute_features(bars, feature_set="extended")
    window = bars.iloc[-607:]
    alone = compute_features(window, feature_set="extended")
    assert not np.allclose(alone["obv"].iloc[-7:], full["obv"].iloc[-7:])
    carried = compute_features(
        window,
        feature_set="extended",
        carry={"obv": float(full["obv"].loc[window.index[0]])},
    )
    np.testing.assert_allclose(
        carried.iloc[-7:].to_numpy(), full.iloc[-7:].to_numpy(), rtol=1e-9, atol=1e-6
    )


def test_extended_set_adds_pandas_ta_columns():
    bars = load_yahoo_csv("AAPL-daily.csv")
    f = compute_features(bars, feature_set="extended")
    assert list(f.columns) == CORE_COLUMNS + EXTENDED_ONLY_COLUMNS
    assert_matches(f["rsi_14"], ta.rsi(bars["close"], length=14).to_numpy())
    assert_matches(f["roc_10"], ta.roc(bars["close"], length=10).to_numpy())
    highest = rolling(bars["high"].to_numpy(), 20, np.max)
    assert_matches(f["donchian_high_20"], highest)


def test_bad_input_is_refused_with_a_clear_message():
    index = pd.date_range("2026-01-05", periods=3, freq="h")  # tz-naive
    bars = pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}, index)
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_features(bars)
    with pytest.raises(ValueError, match="missing columns: volume"):
        compute_features(bars.tz_localize("UTC").drop(columns="volume"))
    with pytest.raises(ValueError, match="unknown feature_set 'fancy'"):
        compute_features(bars.tz_localize("UTC"), feature_set="fancy")


def test_the_feature_reference_defines_every_column_and_is_up_to_date():
    # Readers of the table look columns up in REFERENCE.md: it must cover the contract
    # exactly and be what the contract renders (regenerate: python -m
    # mltrading_assets.features.reference).
    from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS
    from mltrading_assets.features.reference import DEFINITIONS, REFERENCE_FILE, render

    assert set(DEFINITIONS) == set(ALL_FEATURE_COLUMNS)
    assert REFERENCE_FILE.read_text() == render()


def test_chart_axes_are_labelled_with_round_numbers():
    # The chart's price and MACD scales are read by eye: round steps, printed alike.
    from mltrading_assets.charts.feature_chart import nice_ticks

    def labels(low: float, high: float, count: int) -> list[str]:
        values, decimals = nice_ticks(low, high, count)
        return [f"{v + 0.0:.{decimals}f}" for v in values]

    assert labels(99.84, 103.3, 5) == ["100", "101", "102", "103"]
    assert labels(1500, 1720, 5) == ["1500", "1550", "1600", "1650", "1700"]
    assert labels(-0.213, 0.41, 3) == ["0.00", "0.25"]
    assert labels(0.00012, 0.00031, 5) == ["0.00015", "0.00020", "0.00025", "0.00030"]
