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
        raw = _read(path, symbol)
        missing = [c for c in ["Datetime", *_COLUMNS] if c not in raw.columns]
        if missing:
            raise BadBarsError(
                f"{symbol}: {path} is missing columns {missing}; expected "
                "Datetime,Open,High,Low,Close,Adj Close,Volume"
            )
        if raw.empty:
            # A window with no bars is normal; a file with none at all is a mistake.
            raise BadBarsError(f"{symbol}: {path} has no bars, only a header")
        numeric = [c for c in [*_COLUMNS, "Adj Close", *_ACTION_COLUMNS] if c in raw.columns]
        for column in numeric:
            raw[column] = _numbers(raw[column], path, symbol, column)
        stamps = raw["Datetime"].fillna("").str.strip()
        naive = ~stamps.str.contains(_HAS_OFFSET)
        if naive.any():
            raise BadBarsError(
                f"{symbol}: {path} has timestamps without a UTC offset "
                f"(first: {stamps[naive].iloc[0]!r}); write them like 2026-05-26 09:30:00-04:00"
            )
        bars = raw.rename(columns={**_COLUMNS, **_ACTION_COLUMNS})
        bars["adj_close"] = raw["Adj Close"] if "Adj Close" in raw.columns else raw["Close"]
        parsed = pd.to_datetime(stamps, utc=True, format="ISO8601", errors="coerce")
        if parsed.isna().any():
            row = int(parsed.isna().to_numpy().argmax())
            raise BadBarsError(
                f"{symbol}: {path} row {row + 2} column Datetime: {stamps.iloc[row]!r} is not a "
                "time like 2026-05-26 09:30:00-04:00"
            )
        bars.index = pd.DatetimeIndex(parsed)
        actions = [c for c in _ACTION_COLUMNS.values() if c in bars.columns]
        return bars[["open", "high", "low", "close", "adj_close", "volume", *actions]]


def _read(path: Path, symbol: str) -> pd.DataFrame:
    """The file as text columns; what is not a CSV file fails naming the file."""
    try:
        return pd.read_csv(path, dtype=str, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadBarsError(
            f"{symbol}: {path} is not UTF-8 text (byte {exc.start}): is it a CSV file?"
        ) from None
    except pd.errors.EmptyDataError:
        raise BadBarsError(f"{symbol}: {path} is empty; expected a header and bars") from None
    except pd.errors.ParserError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise BadBarsError(f"{symbol}: {path} is not valid CSV: {reason}") from None


def _numbers(values: pd.Series, path: Path, symbol: str, column: str) -> pd.Series:
    """``values`` as floats; a cell that is not a number fails naming its row and column
    (an empty cell becomes NaN, which validation reports as missing)."""
    numbers = pd.to_numeric(values, errors="coerce")
    text = values.fillna("").str.strip()
    bad = numbers.isna() & (text != "") & (text.str.lower() != "nan")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise BadBarsError(
            f"{symbol}: {path} row {row + 2} column {column}: {text.iloc[row]!r} is not a number"
        )
    return numbers.astype(float)
