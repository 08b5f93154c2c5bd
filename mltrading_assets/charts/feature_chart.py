"""A small picture of a symbol's recent features for the Dagster UI: close inside its
Bollinger bands, MACD and signal below. Pure: frames in, PNG bytes out (no Dagster).

The picture is drawn when someone opens it (``mltrading ui`` serves it), not attached to
every materialization: as base64 in each hourly event it was ~12 KB of the ~15 KB a feature
materialization wrote, most of the event log.

Drawn with Pillow: matplotlib took ~300 ms per chart, too slow to attach one to each of
1,000 symbols every hour; this takes a few milliseconds.
"""

import io
from functools import lru_cache
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

CHART_BARS = 200
# A five-colour palette image: the PNG stays a few KB and is encoded in a millisecond.
_PALETTE = {"white": 0, "band": 1, "close": 2, "signal": 3, "grey": 4}
_RGB = [255, 255, 255, 207, 226, 243, 31, 78, 121, 230, 145, 56, 110, 110, 110]
# Sized for the UI's markdown dialog: readable without zooming.
WIDTH, TOP_HEIGHT, BOTTOM_HEIGHT = 760, 260, 110
LEFT, RIGHT, TITLE, GAP, AXIS = 64, 12, 22, 30, 20
FONT_SIZE = 13
DATE_TICKS = 6
LATEST_COLUMNS = [
    "close",
    "sma_24",
    "bb_upper",
    "bb_lower",
    "macd",
    "macd_signal",
    "atr_14",
    "williams_r",
    "volatility_24",
]

# Every feature the chart and the latest-values table read.
CHART_COLUMNS = sorted({"bb_upper", "bb_lower", "macd", "macd_signal", *LATEST_COLUMNS} - {"close"})


def _scale(values: np.ndarray, low: float, high: float, top: int, height: int) -> np.ndarray:
    span = (high - low) or 1.0
    return top + height - (values - low) / span * height


def _line(draw: ImageDraw.ImageDraw, xs: np.ndarray, ys: np.ndarray, color: int) -> None:
    defined = np.isfinite(ys)
    if defined.sum() > 1:
        draw.line(np.column_stack([xs[defined], ys[defined]]).ravel().tolist(), fill=color)


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's own TrueType font at a size the UI's dialog shows legibly (its 10 px bitmap
    # font was too small to read); loaded once per process.
    return ImageFont.load_default(size=FONT_SIZE)


def nice_ticks(low: float, high: float, count: int) -> tuple[np.ndarray, int]:
    """About ``count`` round axis values within [low, high] (steps of 1, 2, 2.5 or 5 times a
    power of ten) and the decimals that print them all alike: 99.5, 100.0, 100.5, not
    99.84, 103.3."""
    span = high - low
    if not np.isfinite(span) or span <= 0:
        return np.array([low]), 2
    raw = span / count
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = np.ceil(low / step) * step
    values = np.arange(first, high + step * 1e-9, step)
    decimals = max(0, -int(np.floor(np.log10(step))) + (1 if step / power == 2.5 else 0))
    return values, decimals


def _panel(
    draw: ImageDraw.ImageDraw, top: int, height: int, low: float, high: float, ticks: int
) -> None:
    """Frame, horizontal grid lines and value labels on the left axis."""
    draw.rectangle([LEFT, top, WIDTH - RIGHT, top + height], outline=_PALETTE["grey"])
    values, decimals = nice_ticks(low, high, ticks)
    for value in values:
        y = float(_scale(np.array([value]), low, high, top, height)[0])
        draw.line([(LEFT - 4, y), (LEFT, y)], fill=_PALETTE["grey"])
        label = f"{value + 0.0:.{decimals}f}"  # + 0.0: no "-0.00"
        draw.text((LEFT - 6, y), label, fill=_PALETTE["grey"], font=_font(), anchor="rm")


def feature_chart_png(bars: pd.DataFrame, features: pd.DataFrame, symbol: str) -> bytes:
    """PNG of the last ``CHART_BARS`` bars: close inside its Bollinger bands with a price
    axis, MACD and its signal below, dates (New York) along the bottom."""
    recent = features.tail(CHART_BARS)
    close = bars.loc[recent.index, "close"].to_numpy(dtype=float)
    upper, lower = recent["bb_upper"].to_numpy(), recent["bb_lower"].to_numpy()
    macd, signal = recent["macd"].to_numpy(), recent["macd_signal"].to_numpy()
    height = TITLE + TOP_HEIGHT + GAP + BOTTOM_HEIGHT + AXIS + 4
    image = Image.new("P", (WIDTH, height), _PALETTE["white"])
    image.putpalette(_RGB)
    draw = ImageDraw.Draw(image)
    xs = np.linspace(LEFT + 2, WIDTH - RIGHT - 2, len(recent))
    stamps = recent.index.tz_convert("America/New_York")

    top = TITLE
    prices = np.concatenate([close, upper[np.isfinite(upper)], lower[np.isfinite(lower)]])
    low, high = float(np.nanmin(prices)), float(np.nanmax(prices))
    band = np.isfinite(upper) & np.isfinite(lower)
    if band.sum() > 1:
        up = _scale(upper[band], low, high, top, TOP_HEIGHT)
        down = _scale(lower[band], low, high, top, TOP_HEIGHT)
        outline = np.column_stack([np.r_[xs[band], xs[band][::-1]], np.r_[up, down[::-1]]])
        draw.polygon(outline.ravel().tolist(), fill=_PALETTE["band"])
    _panel(draw, top, TOP_HEIGHT, low, high, ticks=5)
    _line(draw, xs, _scale(close, low, high, top, TOP_HEIGHT), _PALETTE["close"])
    draw.text(
        (LEFT, 2),
        f"{symbol}  close {close[-1]:.4g} (blue) in Bollinger bands (20, 2; shaded), "
        f"last bar {stamps[-1]:%Y-%m-%d %H:%M} New York",
        fill=_PALETTE["close"],
        font=_font(),
    )

    bottom = top + TOP_HEIGHT + GAP
    draw.text(
        (LEFT, bottom - 18),
        "MACD (12, 26; blue) and signal (9; orange)",
        fill=_PALETTE["grey"],
        font=_font(),
    )
    finite = np.concatenate([macd[np.isfinite(macd)], signal[np.isfinite(signal)], [0.0]])
    low, high = float(finite.min()), float(finite.max())
    _panel(draw, bottom, BOTTOM_HEIGHT, low, high, ticks=3)
    zero = _scale(np.array([0.0]), low, high, bottom, BOTTOM_HEIGHT)[0]
    draw.line([(LEFT, zero), (WIDTH - RIGHT, zero)], fill=_PALETTE["grey"])
    _line(draw, xs, _scale(macd, low, high, bottom, BOTTOM_HEIGHT), _PALETTE["close"])
    _line(draw, xs, _scale(signal, low, high, bottom, BOTTOM_HEIGHT), _PALETTE["signal"])

    axis = bottom + BOTTOM_HEIGHT
    for i in np.linspace(0, len(recent) - 1, min(DATE_TICKS, len(recent))).round().astype(int):
        x = float(xs[i])
        draw.line([(x, axis), (x, axis + 4)], fill=_PALETTE["grey"])
        label = f"{stamps[i]:%b %d}"
        draw.text(
            (min(x - 15, WIDTH - RIGHT - 36), axis + 5), label, fill=_PALETTE["grey"], font=_font()
        )

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def chart_markdown(charts_url: str, symbol: str, source: str, last_bar: pd.Timestamp) -> str:
    """Markdown the Dagster UI renders as the chart, fetched from the chart server when the
    dialog opens. The newest bar in the address keeps a browser from showing a cached older
    picture of the symbol."""
    query = urlencode({"source": source, "last_bar": f"{last_bar:%Y-%m-%dT%H:%MZ}"})
    return f"![{symbol} features]({charts_url.rstrip('/')}/{quote(symbol)}.png?{query})"


def latest_values_markdown(bars: pd.DataFrame, features: pd.DataFrame) -> str:
    """Markdown table of the newest bar's key values."""
    last = features.index[-1]
    values = {**features.loc[last].to_dict(), "close": bars.at[last, "close"]}
    rows = [f"| {n} | {values[n]:.6g} |" for n in LATEST_COLUMNS if pd.notna(values.get(n))]
    header = f"Latest bar {last:%Y-%m-%d %H:%M} UTC\n\n| feature | value |\n|---|---|\n"
    return header + "\n".join(rows)
