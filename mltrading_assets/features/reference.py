"""The feature reference (``features/REFERENCE.md``), written from the contract so the two
cannot drift: every column of ``contract.py`` must be defined here, and a test compares the
file with ``render()``. Regenerate it with ``python -m mltrading_assets.features.reference``.
"""

from pathlib import Path

from mltrading_assets.features.contract import (
    BASIC_PRICE,
    EXTENDED_ONLY_COLUMNS,
    FEATURE_VERSION,
    INTEGER_COLUMNS,
    LOOKBACK_BARS,
    MOVING_AVERAGES,
    TECHNICAL,
    TIME,
    VOLATILITY,
)

REFERENCE_FILE = Path(__file__).with_name("REFERENCE.md")

# What each column holds. Windows count bars (hours of trading), not clock hours.
DEFINITIONS: dict[str, str] = {
    "returns": "`close / close[t-1] - 1`",
    "log_returns": "`ln(close / close[t-1])`",
    "high_low_pct": "the bar's range relative to its close, `(high - low) / close`",
    "open_close_pct": "the bar's move relative to its open, `(close - open) / open`",
    "price_acceleration": "change of `returns` from the previous bar",
    "returns_sign": "-1, 0 or 1: the sign of `returns`",
    "hour": "hour of the bar start in New York, 0–23",
    "day_of_week": "0 for Monday up to 6 for Sunday (New York date)",
    "is_market_open": "1 when the bar starts inside an NYSE regular session (holidays and "
    "early closes included), else 0",
    "hour_sin": "`sin(2π · hour / 24)`",
    "hour_cos": "`cos(2π · hour / 24)`",
    "dow_sin": "`sin(2π · day_of_week / 7)`",
    "dow_cos": "`cos(2π · day_of_week / 7)`",
    "sma_24": "mean close of the last 24 bars",
    "sma_120": "mean close of the last 120 bars",
    "sma_480": "mean close of the last 480 bars",
    "price_to_sma_24": "`close / sma_24`",
    "price_to_sma_120": "`close / sma_120`",
    "price_to_sma_480": "`close / sma_480`",
    "sma_cross_24_120": "1 when `sma_24` is above `sma_120`, -1 below, 0 equal",
    "sma_cross_120_480": "1 when `sma_120` is above `sma_480`, -1 below, 0 equal",
    "bb_upper": "Bollinger upper band: 20-bar mean close + 2 population standard deviations",
    "bb_lower": "Bollinger lower band: 20-bar mean close − 2 population standard deviations",
    "bb_position": "where the close sits in the band, `(close - bb_lower) / (bb_upper - "
    "bb_lower)`; empty when the band is flat",
    "bb_squeeze": "band width relative to the 20-bar mean, `(bb_upper - bb_lower) / sma_20`",
    "macd": "12-bar EMA minus 26-bar EMA of the close (each EMA seeded with the mean of its "
    "first inputs)",
    "macd_signal": "9-bar EMA of `macd`",
    "macd_hist": "`macd - macd_signal`",
    "macd_normalized": "`macd / close`",
    "atr_14": "Wilder's average true range over 14 bars",
    "atr_normalized": "`atr_14 / close`",
    "williams_r": "Williams %R over 14 bars, from -100 (close at the low) to 0 (at the high); "
    "empty when the range is flat",
    "volatility_24": "standard deviation (sample) of `log_returns` over 24 bars",
    "volatility_120": "standard deviation (sample) of `log_returns` over 120 bars",
    "volatility_480": "standard deviation (sample) of `log_returns` over 480 bars",
    "volatility_ratio_24_120": "`volatility_24 / volatility_120`",
    "returns_variance_24": "variance (sample) of `returns` over 24 bars",
    "rsi_14": "relative strength index over 14 bars",
    "stoch_k_14_3": "stochastic %K over 14 bars, smoothed over 3",
    "stoch_d_14_3": "stochastic %D: 3-bar mean of %K",
    "adx_14": "average directional index over 14 bars",
    "obv": "on-balance volume, a running total from the symbol's first bar",
    "mfi_14": "money flow index over 14 bars",
    "cci_20": "commodity channel index over 20 bars",
    "roc_10": "rate of change of the close over 10 bars, in percent",
    "vwap_session": "volume-weighted average price since the open of the bar's trading day",
    "kc_upper_20": "Keltner channel upper line over 20 bars",
    "kc_lower_20": "Keltner channel lower line over 20 bars",
    "donchian_high_20": "highest high of the last 20 bars",
    "donchian_low_20": "lowest low of the last 20 bars",
    "zscore_close_20": "how many 20-bar standard deviations the close is from its 20-bar mean",
}

_CORE_GROUPS = {
    "Price": BASIC_PRICE,
    "Time (New York)": TIME,
    "Moving averages": MOVING_AVERAGES,
    "Technical indicators": TECHNICAL,
    "Volatility": VOLATILITY,
}


def _table(columns: list[str]) -> list[str]:
    lines = ["| column | type | definition |", "|---|---|---|"]
    for column in columns:
        kind = "integer" if column in INTEGER_COLUMNS else "float"
        lines.append(f"| `{column}` | {kind} | {DEFINITIONS[column]} |")
    return lines


def render() -> str:
    """The reference document, from the contract's column lists."""
    core = sum(len(columns) for columns in _CORE_GROUPS.values())
    lines = [
        "# Feature reference",
        "",
        "<!-- Written by `python -m mltrading_assets.features.reference` from "
        "features/contract.py; edit those, not this file. -->",
        "",
        "The columns of `public.feature_engineered_data`, one row per stored bar of a symbol. "
        "Windows count bars, not clock hours. A value that is not defined yet (the first bars "
        "of a window) or not defined at all (a division by zero) is stored as NULL, never as "
        "NaN or infinity.",
        "",
        f"Feature version: `{FEATURE_VERSION}` (a new version recomputes every stored bar). "
        f"A refresh recomputes new or changed bars from the {LOOKBACK_BARS} bars before them, "
        "which gives the same numbers as computing the whole history.",
        "",
        f"## Core set (`feature_set=core`, {core} columns)",
    ]
    for title, columns in _CORE_GROUPS.items():
        lines += ["", f"### {title} ({len(columns)})", "", *_table(columns)]
    lines += [
        "",
        f"## Extended set (`feature_set=extended`: the core set and {len(EXTENDED_ONLY_COLUMNS)}"
        " more)",
        "",
        "Computed with pandas-ta's definitions and default parameters. A row written by the "
        "core set leaves these NULL.",
        "",
        *_table(EXTENDED_ONLY_COLUMNS),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    REFERENCE_FILE.write_text(render())
    print(f"wrote {REFERENCE_FILE}")
