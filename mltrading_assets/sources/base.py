"""The one interface every bar source implements."""

from abc import ABC, abstractmethod

import pandas as pd

from mltrading_assets.sources.errors import SymbolNotFoundError
from mltrading_assets.sources.symbols import validate_symbol
from mltrading_assets.sources.validation import BAR_COLUMNS, validate_bars


class BarSource(ABC):
    """Hourly OHLCV bars for one symbol: UTC bar-start index, columns ``BAR_COLUMNS``."""

    #: Stored in ``market_data.source``; bars of different sources never overwrite each other.
    name: str

    def now(self) -> pd.Timestamp:
        """The source's clock: bars starting before this are fetched."""
        return pd.Timestamp.now(tz="UTC")

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Validated bars with ``start <= bar start < end``.

        Raises ``SymbolNotFoundError`` when the source has nothing for the symbol at all,
        ``BadBarsError`` when what it has is malformed, ``TransientSourceError`` when it
        could not be asked.
        """
        validate_symbol(symbol)
        raw = self._download(symbol, start, end)
        if raw.empty:
            raise SymbolNotFoundError(
                f"{symbol}: {self.name} returned no bars between {start} and {end} "
                "(unknown or delisted symbol, or no trading in that window)"
            )
        bars = validate_bars(raw, symbol)
        bars = bars.loc[(bars.index >= start) & (bars.index < end), BAR_COLUMNS]
        bars.index.name = "timestamp"
        return bars

    @abstractmethod
    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars as the source has them, already in ``BAR_COLUMNS`` with a tz-aware index."""
