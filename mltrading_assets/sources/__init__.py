"""Bar sources behind one interface: Yahoo Finance, a CSV folder, a deterministic generator."""

from typing import Any

from mltrading_assets.sources.base import BarSource
from mltrading_assets.sources.csv_files import CsvSource
from mltrading_assets.sources.errors import (
    BadBarsError,
    InvalidSymbolError,
    SourceError,
    SymbolNotFoundError,
    TransientSourceError,
)
from mltrading_assets.sources.symbols import is_valid_symbol, normalize_symbols, validate_symbol
from mltrading_assets.sources.synthetic import SyntheticSource
from mltrading_assets.sources.yahoo import YahooSource

__all__ = [
    "BadBarsError",
    "BarSource",
    "CsvSource",
    "InvalidSymbolError",
    "SourceError",
    "SymbolNotFoundError",
    "SyntheticSource",
    "TransientSourceError",
    "YahooSource",
    "build_source",
    "is_valid_symbol",
    "normalize_symbols",
    "validate_symbol",
]


SOURCE_KINDS = ("synthetic", "yahoo", "csv")
SOURCE_CLASSES: dict[str, type[BarSource]] = {
    "synthetic": SyntheticSource,
    "yahoo": YahooSource,
    "csv": CsvSource,
}


def build_source(
    kind: str = "synthetic",
    csv_dir: str = "",
    as_of: str = "",
    request_timeout_s: float = 10.0,
    retry_attempts: int = 4,
    retry_backoff_s: float = 1.0,
    cache_dir: str = "",
    request_slots: Any = None,
) -> BarSource:
    """The source named by ``kind``; ``csv_dir`` for csv, ``as_of`` pins the synthetic clock,
    the rest set how the yahoo source asks (per-request timeout, retries, yfinance's cache,
    a semaphore bounding requests in flight across worker processes)."""
    if kind == "synthetic":
        import pandas as pd

        clock = pd.Timestamp(as_of) if as_of else None
        if clock is not None:
            clock = clock.tz_localize("UTC") if clock.tzinfo is None else clock.tz_convert("UTC")
        return SyntheticSource(as_of=clock)
    if kind == "yahoo":
        return YahooSource(
            request_timeout_s=request_timeout_s,
            attempts=retry_attempts,
            backoff_s=retry_backoff_s,
            cache_dir=cache_dir,
            request_slots=request_slots,
        )
    if kind == "csv":
        if not csv_dir:
            raise ValueError(
                "the csv source needs csv_dir (MLTRADING_CSV_DIR): a folder of <SYMBOL>.csv"
            )
        return CsvSource(csv_dir)
    raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
