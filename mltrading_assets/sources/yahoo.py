"""Yahoo Finance through yfinance: hourly bars, normalized from whatever shape yfinance returns."""

import logging
from collections.abc import Callable

import pandas as pd

from mltrading_assets.sources.base import BarSource
from mltrading_assets.sources.errors import BadBarsError, SymbolNotFoundError, TransientSourceError

# Yahoo serves 1h bars for the last 730 days only.
MAX_HOURLY_HISTORY = pd.Timedelta(days=729)

_YF_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}
# Words in yfinance's logged error that mean "could not ask", not "nothing there".
_TRANSIENT_MARKERS = (
    "rate limit",
    "too many requests",
    "timeout",
    "timed out",
    "dnserror",
    "could not resolve",
    "connection",
    "curl:",
    "ssl",
    "502",
    "503",
    "504",
)

Downloader = Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame]


def normalize_yfinance_frame(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """yfinance output (MultiIndex ``(Price, Ticker)`` or flat columns) as ``BAR_COLUMNS``."""
    if isinstance(frame.columns, pd.MultiIndex):
        levels = [list(frame.columns.get_level_values(i)) for i in range(frame.columns.nlevels)]
        ticker_level = next((i for i, values in enumerate(levels) if symbol in values), None)
        if ticker_level is None:
            raise BadBarsError(f"{symbol}: yfinance returned columns for other tickers only")
        frame = frame.xs(symbol, axis=1, level=ticker_level)
    missing = [c for c in _YF_COLUMNS if c not in frame.columns and c != "Adj Close"]
    if missing:
        raise BadBarsError(f"{symbol}: yfinance frame lacks columns {missing}")
    bars = frame.rename(columns=_YF_COLUMNS)
    if "adj_close" not in bars.columns:
        bars["adj_close"] = bars["close"]
    bars = bars[list(_YF_COLUMNS.values())]
    # yfinance pads hours without trades with all-NaN rows; they are not bars.
    bars = bars.dropna(how="all", subset=["open", "high", "low", "close"])
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise BadBarsError(f"{symbol}: yfinance frame is not indexed by time")
    return bars


class _ErrorCapture(logging.Handler):
    # yf.download never raises: it logs per-ticker failures and returns an empty frame.
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def yfinance_download(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """One call to ``yf.download``; failures it only logs are raised as typed errors."""
    import yfinance as yf

    capture = _ErrorCapture()
    logger = logging.getLogger("yfinance")
    logger.addHandler(capture)
    try:
        frame = yf.download(
            symbol,
            start=start.to_pydatetime(),
            end=end.to_pydatetime(),
            interval="1h",
            auto_adjust=False,
            actions=False,
            progress=False,
            threads=False,
            multi_level_index=True,
        )
    finally:
        logger.removeHandler(capture)
    if frame is None or frame.empty:
        detail = " | ".join(m.strip() for m in capture.messages if m.strip())
        if any(marker in detail.lower() for marker in _TRANSIENT_MARKERS):
            raise TransientSourceError(f"{symbol}: Yahoo Finance could not be reached: {detail}")
        raise SymbolNotFoundError(
            f"{symbol}: Yahoo Finance has no hourly bars from {start} to {end}"
            + (f": {detail}" if detail else " (unknown or delisted symbol?)")
        )
    return frame


class YahooSource(BarSource):
    name = "yahoo"

    def __init__(self, downloader: Downloader = yfinance_download) -> None:
        self._downloader = downloader

    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        start = max(start, end - MAX_HOURLY_HISTORY)
        return normalize_yfinance_frame(self._downloader(symbol, start, end), symbol)
