"""Deterministic, realistic NYSE-session hourly bars for any symbol, for demos and benchmarks."""

import zlib
from functools import lru_cache

import numpy as np
import pandas as pd

from mltrading_assets.sources.base import BarSource
from mltrading_assets.trading_calendar import bar_ends, sessions_between

# Every series starts here, so a bar's values never depend on the window asked for.
EPOCH = pd.Timestamp("2020-01-02", tz="UTC")
# Relative intraday volume of the 7 hourly bars of a full session: busy open and close.
_INTRADAY_VOLUME = np.array([1.6, 1.05, 0.85, 0.75, 0.8, 1.0, 1.5])


def session_bar_starts(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Start of every hourly bar of every NYSE session between start and end (UTC).

    Bars start at the open (9:30 New York) and every hour after; the last bar of an
    early-close day is cut short by the close, as Yahoo's are.
    """
    return _bars_and_sessions(start, end)[0]


@lru_cache(maxsize=8)
def _history_bars(end: pd.Timestamp) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Every bar from ``EPOCH`` to ``end``, whether it opens a session, and its volume slot.

    The same for every symbol of a run (one clock), so built once: it was half of each
    synthetic fetch.
    """
    starts, first_of_session = _bars_and_sessions(EPOCH, end)
    local_hour = starts.tz_convert("America/New_York").hour.to_numpy()
    slot = np.minimum(local_hour - 9, len(_INTRADAY_VOLUME) - 1)
    return starts, first_of_session, slot


def _bars_and_sessions(
    start: pd.Timestamp, end: pd.Timestamp
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    sessions = sessions_between(start, end)
    opens = sessions["open"].to_numpy(dtype="datetime64[ns]")
    closes = sessions["close"].to_numpy(dtype="datetime64[ns]")
    hour = np.timedelta64(1, "h")
    per_session = np.ceil((closes - opens) / hour).astype(int)
    offsets = np.arange(per_session.sum()) - np.repeat(
        np.cumsum(per_session) - per_session, per_session
    )
    starts = np.repeat(opens, per_session) + offsets * hour
    first_of_session = offsets == 0
    return pd.DatetimeIndex(starts, tz="UTC"), first_of_session


class SyntheticSource(BarSource):
    name = "synthetic"

    def __init__(self, as_of: pd.Timestamp | None = None) -> None:
        self._as_of = as_of

    def now(self) -> pd.Timestamp:
        return self._as_of if self._as_of is not None else super().now()

    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        starts, first_of_session, slot = _history_bars(min(end, self.now()))
        n = len(starts)
        seed = zlib.crc32(symbol.encode())
        params = np.random.default_rng([seed, 0])
        first_price = params.uniform(15, 500)
        hourly_vol = params.uniform(0.002, 0.008)
        base_volume = params.uniform(2e4, 2e6)

        # One stream per component: the draws for bar i must not depend on how many bars
        # were asked for, or a later clock would rewrite history.
        def stream(k: int) -> np.random.Generator:
            return np.random.default_rng([seed, k])

        drift = stream(1).normal(0.00002, hourly_vol, n)
        gap = np.where(first_of_session, stream(2).normal(0, hourly_vol * 2, n), 0.0)
        wiggle = np.abs(stream(3).normal(0, hourly_vol / 2, (n, 2))).T
        volume_noise = stream(4).lognormal(0, 0.35, n)

        # Every draw and the running sum cover the whole history; the rest only the bars
        # asked for (a refresh asks for a few dozen of ~10,000).
        lo, hi = np.searchsorted(starts.asi8, [start.value, end.value], side="left")
        log_close = (np.log(first_price) + np.cumsum(drift + gap))[lo:hi]
        drift, wiggle, slot = drift[lo:hi], wiggle[:, lo:hi], slot[lo:hi]
        close = np.exp(log_close)
        open_ = np.exp(log_close - drift)
        high = np.maximum(open_, close) * (1 + wiggle[0])
        low = np.minimum(open_, close) * (1 - wiggle[1])
        volume = np.round(base_volume * _INTRADAY_VOLUME[slot] * volume_noise[lo:hi])
        # The bar the clock is in has traded only part of its hour: partial, like Yahoo's.
        now = self.now()
        k = int(np.searchsorted(starts.asi8, now.value, side="right")) - 1
        if lo <= k < hi and now < bar_ends(starts[k : k + 1], "XNYS")[0]:
            done = (now - starts[k]) / (bar_ends(starts[k : k + 1], "XNYS")[0] - starts[k])
            i = k - lo
            top, bottom = high[i], low[i]
            close[i] = open_[i] + (close[i] - open_[i]) * done
            high[i] = max(open_[i], close[i]) + (top - max(open_[i], close[i])) * done
            low[i] = min(open_[i], close[i]) - (min(open_[i], close[i]) - bottom) * done
            volume[i] = np.round(volume[i] * done)
        close = close.round(4)
        return pd.DataFrame(
            {
                "open": open_.round(4),
                "high": high.round(4),
                "low": low.round(4),
                "close": close,
                "adj_close": close,
                "volume": volume,
            },
            index=starts[lo:hi],
        )
