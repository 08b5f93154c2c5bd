"""Bar sources behind one interface: Yahoo Finance, a CSV folder, a deterministic generator."""

from mltrading_assets.sources.base import BarSource
from mltrading_assets.sources.csv_files import CsvSource
from mltrading_assets.sources.errors import (
    BadBarsError,
    InvalidSymbolError,
    SourceError,
    SymbolNotFoundError,
    TransientSourceError,
)
from mltrading_assets.sources.symbols import normalize_symbols, validate_symbol
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
    "normalize_symbols",
    "validate_symbol",
]


SOURCE_KINDS = ("synthetic", "yahoo", "csv")


def build_source(kind: str = "synthetic", csv_dir: str = "", as_of: str = "") -> BarSource:
    """The source named by ``kind``; ``csv_dir`` for csv, ``as_of`` pins the synthetic clock."""
    if kind == "synthetic":
        import pandas as pd

        clock = pd.Timestamp(as_of) if as_of else None
        if clock is not None:
            clock = clock.tz_localize("UTC") if clock.tzinfo is None else clock.tz_convert("UTC")
        return SyntheticSource(as_of=clock)
    if kind == "yahoo":
        return YahooSource()
    if kind == "csv":
        if not csv_dir:
            raise ValueError(
                "the csv source needs csv_dir (MLTRADING_CSV_DIR): a folder of <SYMBOL>.csv"
            )
        return CsvSource(csv_dir)
    raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
