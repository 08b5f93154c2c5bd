"""Bring your own bars: a folder of ``<SYMBOL>.csv`` files in yfinance's CSV layout.

    Datetime,Open,High,Low,Close,Adj Close,Volume
    2026-05-26 09:30:00-04:00,170.07,200.81,170.07,199.85,199.66,12000

``Datetime`` must carry its UTC offset; ``Adj Close`` may be left out (then it equals Close).
Optional ``Stock Splits`` (ratio, e.g. 2 for 2:1) and ``Dividends`` (per share) columns, 0 on
other bars, report corporate actions on the bar of their ex-date; prices are expected
adjusted for splits, as Yahoo's are.
"""

import re
from pathlib import Path

import pandas as pd

from mltrading_assets.sources.base import BarSource
from mltrading_assets.sources.errors import BadBarsError, SymbolNotFoundError

_COLUMNS = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}
# Optional, as yfinance writes them: the split ratio (new/old shares) and the dividend per
# share on the bar of the ex-date, 0 elsewhere.
_ACTION_COLUMNS = {"Stock Splits": "split_ratio", "Dividends": "dividends"}
_HAS_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


class CsvSource(BarSource):
    name = "csv"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path_for(self, symbol: str) -> Path:
        return self.directory / f"{symbol}.csv"

    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        path = self.path_for(symbol)
        if not path.is_file():
            raise SymbolNotFoundError(f"{symbol}: no file {path}")
        raw = pd.read_csv(path, dtype={"Datetime": str})
        missing = [c for c in ["Datetime", *_COLUMNS] if c not in raw.columns]
        if missing:
            raise BadBarsError(
                f"{symbol}: {path} is missing columns {missing}; expected "
                "Datetime,Open,High,Low,Close,Adj Close,Volume"
            )
        if raw.empty:
            # A window with no bars is normal; a file with none at all is a mistake.
            raise BadBarsError(f"{symbol}: {path} has no bars, only a header")
        stamps = raw["Datetime"].str.strip()
        naive = ~stamps.str.contains(_HAS_OFFSET)
        if naive.any():
            raise BadBarsError(
                f"{symbol}: {path} has timestamps without a UTC offset "
                f"(first: {stamps[naive].iloc[0]!r}); write them like 2026-05-26 09:30:00-04:00"
            )
        bars = raw.rename(columns={**_COLUMNS, **_ACTION_COLUMNS})
        bars["adj_close"] = raw["Adj Close"] if "Adj Close" in raw.columns else raw["Close"]
        bars.index = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True, format="ISO8601"))
        actions = [c for c in _ACTION_COLUMNS.values() if c in bars.columns]
        return bars[["open", "high", "low", "close", "adj_close", "volume", *actions]]
