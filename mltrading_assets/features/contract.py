"""Column contract of ``feature_engineered_data`` (described for readers in ``REFERENCE.md``).

Other code, dashboards and models read these columns by name: the lists here are the single
source for the asset, the SQL writes and the tests.
"""

# Bump whenever any formula changes: the asset then recomputes every stored bar.
FEATURE_VERSION = "1"

# Incremental runs recompute new bars from this many earlier bars. EMA/Wilder seeds fade
# below 1e-12 relative after 480 bars, so 600 keeps incremental == full within 1e-9.
LOOKBACK_BARS = 600

BASIC_PRICE = [
    "returns",
    "log_returns",
    "high_low_pct",
    "open_close_pct",
    "price_acceleration",
    "returns_sign",
]
TIME = ["hour", "day_of_week", "is_market_open", "hour_sin", "hour_cos", "dow_sin", "dow_cos"]
MOVING_AVERAGES = [
    "sma_24",
    "sma_120",
    "sma_480",
    "price_to_sma_24",
    "price_to_sma_120",
    "price_to_sma_480",
    "sma_cross_24_120",
    "sma_cross_120_480",
]
TECHNICAL = [
    "bb_upper",
    "bb_lower",
    "bb_position",
    "bb_squeeze",
    "macd",
    "macd_signal",
    "macd_hist",
    "macd_normalized",
    "atr_14",
    "atr_normalized",
    "williams_r",
]
VOLATILITY = [
    "volatility_24",
    "volatility_120",
    "volatility_480",
    "volatility_ratio_24_120",
    "returns_variance_24",
]
CORE_COLUMNS = BASIC_PRICE + TIME + MOVING_AVERAGES + TECHNICAL + VOLATILITY

EXTENDED_ONLY_COLUMNS = [
    "rsi_14",
    "stoch_k_14_3",
    "stoch_d_14_3",
    "adx_14",
    "obv",
    "mfi_14",
    "cci_20",
    "roc_10",
    "vwap_session",
    "kc_upper_20",
    "kc_lower_20",
    "donchian_high_20",
    "donchian_low_20",
    "zscore_close_20",
]

FEATURE_SETS: dict[str, list[str]] = {
    "core": CORE_COLUMNS,
    "extended": CORE_COLUMNS + EXTENDED_ONLY_COLUMNS,
}

# Every feature column the table holds; a core-set row leaves the extended ones NULL.
ALL_FEATURE_COLUMNS = CORE_COLUMNS + EXTENDED_ONLY_COLUMNS

# Integer-valued columns, stored as SMALLINT.
INTEGER_COLUMNS = {
    "returns_sign",
    "hour",
    "day_of_week",
    "is_market_open",
    "sma_cross_24_120",
    "sma_cross_120_480",
}


def columns_for(feature_set: str) -> list[str]:
    """The contract columns of ``feature_set``; a clear error for an unknown set."""
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        known = ", ".join(sorted(FEATURE_SETS))
        raise ValueError(f"unknown feature_set {feature_set!r}; expected one of: {known}") from None
