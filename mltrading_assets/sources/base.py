"""The one interface every bar source implements."""

from abc import ABC, abstractmethod

import pandas as pd

from mltrading_assets.sources.errors import BadBarsError
from mltrading_assets.sources.symbols import validate_symbol
from mltrading_assets.sources.validation import BAR_COLUMNS, validate_bars

ACTION_COLUMNS = ["ex_date", "kind", "value"]
NEW_YORK = "America/New_York"


_NO_ACTIONS = pd.DataFrame(columns=ACTION_COLUMNS)


def no_actions() -> pd.DataFrame:
    # A copy of one built frame: building an empty frame costs ~15 times more, per symbol.
    return _NO_ACTIONS.copy()


def _actions(raw: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Splits and dividends from optional ``split_ratio`` / ``dividends`` columns of the
    bars (where yfinance and its CSV layout put them: 0 on bars without one)."""
    reported = [
        (column, kind)
        for column, kind in (("split_ratio", "split"), ("dividends", "dividend"))
        if column in raw.columns
    ]
    if not reported:
        return no_actions()
    rows = []
    for column, kind in reported:
        values = pd.to_numeric(raw[column], errors="coerce").fillna(0.0)
        if (values < 0).any():
            first = raw.index[(values < 0).to_numpy()][0]
            raise BadBarsError(f"{symbol}: negative {column} at {first}")
        for when, value in values[values > 0].items():
            if kind == "split" and value == 1.0:
                continue
            day = pd.Timestamp(when).tz_convert(NEW_YORK).date()
            rows.append((day, kind, float(value)))
    return pd.DataFrame(rows, columns=ACTION_COLUMNS).drop_duplicates(["ex_date", "kind"])


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

    #: How far back the source serves bars (None: all it has); a re-based history is
    #: re-fetched over this window.
    max_history: pd.Timedelta | None = None
    #: Whether the source multiplies volume by a split's ratio along with dividing prices;
    #: stored bars it no longer serves are adjusted the same way.
    split_adjusts_volume: bool = True

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Validated bars with ``start <= bar start < end`` (see ``fetch_with_actions``)."""
        return self.fetch_with_actions(symbol, start, end)[0]

    def fetch_with_actions(
        self, symbol: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validated bars with ``start <= bar start < end``, and the splits and dividends the
        source reported in that window (``ACTION_COLUMNS``: New York ex-date, kind, value:
        the split ratio new/old shares, or the dividend per share).

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
            return empty.astype(float), no_actions()
        actions = _actions(raw, symbol)
        # Sources build their frames in BAR_COLUMNS, in order: a column-list selection (~0.25
        # ms in pandas 3, ~3 % of an hourly refresh) only for one that did not, and after
        # validation a row mask alone.
        bars = validate_bars(raw if list(raw.columns) == BAR_COLUMNS else raw[BAR_COLUMNS], symbol)
        bars = bars[(bars.index >= start) & (bars.index < end)]
        bars.index.name = "timestamp"
        return bars, actions

    @abstractmethod
    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars as the source has them, already in ``BAR_COLUMNS`` with a tz-aware index."""
