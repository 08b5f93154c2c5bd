"""The one interface every bar source implements."""

from abc import ABC, abstractmethod

import pandas as pd

from mltrading_assets.sources.symbols import validate_symbol
from mltrading_assets.sources.validation import BAR_COLUMNS, validate_bars


class BarSource(ABC):
    """Hourly OHLCV bars for one symbol: UTC bar-start index, columns ``BAR_COLUMNS``."""

    #: Stored in ``market_data.source``; bars of different sources never overwrite each other.
    name: str
    #: True when fetching waits on the network rather than a core (see BarSourceResource).
    network_bound: bool = False

    @staticmethod  # noqa: B027 (an optional hook: most sources need nothing)
    def preload() -> None:
        """Import what fetching needs, before worker processes are forked (default: nothing)."""

    def now(self) -> pd.Timestamp:
        """The source's clock: bars starting before this are fetched."""
        return pd.Timestamp.now(tz="UTC")

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Validated bars with ``start <= bar start < end``.

        An empty frame means the source knows the symbol but has no bars in the window.
        Raises ``SymbolNotFoundError`` when the source does not know the symbol,
        ``BadBarsError`` when what it has is malformed, ``TransientSourceError`` when it
        could not be asked.
        """
        validate_symbol(symbol)
        raw = self._download(symbol, start, end)
        if raw.empty:
            empty = pd.DataFrame(columns=BAR_COLUMNS, index=pd.DatetimeIndex([], tz="UTC"))
            empty.index.name = "timestamp"
            return empty.astype(float)
        bars = validate_bars(raw, symbol)
        bars = bars.loc[(bars.index >= start) & (bars.index < end), BAR_COLUMNS]
        bars.index.name = "timestamp"
        return bars

    @abstractmethod
    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars as the source has them, already in ``BAR_COLUMNS`` with a tz-aware index."""
