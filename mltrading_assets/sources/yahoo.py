"""Yahoo Finance through yfinance's own HTTP client, with errors told apart by what happened.

``yf.download`` never raises: it logs a per-ticker message and returns an empty frame, so
"Yahoo is down" and "no such symbol" look alike except for their words, and it builds a new
session (cookie and crumb requests) on every call. This module calls ``Ticker.history`` —
what ``download`` runs per ticker — with yfinance's exceptions switched on, through one
long-lived session per worker process that remembers the HTTP status of every chart
response. The type of the exception and those statuses decide the outcome:

| what happened | outcome |
|---|---|
| HTTP 429, ``YFRateLimitError`` | ``RateLimitedError`` (transient: retried) |
| HTTP 5xx from the chart endpoint, whatever the body | ``YahooUnavailableError`` (transient) |
| curl timeout or connection error | ``YahooUnavailableError`` (transient) |
| HTTP 404 with Yahoo's "No data found, symbol may be delisted" | ``SymbolNotFoundError`` |
| HTTP 200 with no rows in the window | an empty frame: a valid symbol with no new bars |
| two workers writing yfinance's sqlite cookie cache at once | ``TransientSourceError`` |

Transient errors are retried here with exponential backoff and jitter (tenacity), up to
``attempts``; a symbol still failing then fails as transient, and the asset's RetryPolicy
retries the step.
"""

import contextlib
import logging
import os
import warnings
from collections.abc import Callable

import pandas as pd
import tenacity

from mltrading_assets.sources.base import BarSource
from mltrading_assets.sources.errors import (
    BadBarsError,
    SourceError,
    SymbolNotFoundError,
    TransientSourceError,
)
from mltrading_assets.trading_calendar import exchange_timezone

# Yahoo serves 1h bars for the last 730 days only.
MAX_HOURLY_HISTORY = pd.Timedelta(days=729)
CHART_PATH = "/v8/finance/chart/"

_YF_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}

# Corporate actions yfinance puts on the bar of their ex-date (actions=True).
_YF_ACTIONS = {"Stock Splits": "split_ratio", "Dividends": "dividends"}

Downloader = Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame]


class RateLimitedError(TransientSourceError):
    """Yahoo answered 429 Too Many Requests."""


class YahooUnavailableError(TransientSourceError):
    """Yahoo answered 5xx, or did not answer in time, or could not be reached."""


def normalize_yfinance_frame(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """yfinance output (MultiIndex ``(Price, Ticker)`` or flat columns) as ``BAR_COLUMNS``."""
    if isinstance(frame.columns, pd.MultiIndex):
        levels = [list(frame.columns.get_level_values(i)) for i in range(frame.columns.nlevels)]
        ticker_level = next((i for i, values in enumerate(levels) if symbol in values), None)
        if ticker_level is None:
            raise BadBarsError(f"{symbol}: yfinance returned columns for other tickers only")
        frame = frame.xs(symbol, axis=1, level=ticker_level)
    if frame.empty:
        return pd.DataFrame(
            columns=list(_YF_COLUMNS.values()), index=pd.DatetimeIndex([], tz="UTC")
        )
    missing = [c for c in _YF_COLUMNS if c not in frame.columns and c != "Adj Close"]
    if missing:
        raise BadBarsError(f"{symbol}: yfinance frame lacks columns {missing}")
    bars = frame.rename(columns={**_YF_COLUMNS, **_YF_ACTIONS})
    if "adj_close" not in bars.columns:
        bars["adj_close"] = bars["close"]
    actions = [c for c in _YF_ACTIONS.values() if c in bars.columns]
    bars = bars[list(_YF_COLUMNS.values()) + actions]
    # yfinance pads hours without trades with all-NaN rows; they are not bars.
    bars = bars.dropna(how="all", subset=["open", "high", "low", "close"])
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise BadBarsError(f"{symbol}: yfinance frame is not indexed by time")
    return bars


def _recording_session_class():
    from curl_cffi import requests as curl_requests

    class RecordingSession(curl_requests.Session):
        """yfinance's transport (curl_cffi impersonating Chrome, as ``yfinance.new_session``
        builds it) that caps every request at ``timeout_s``, holds one of the run's request
        ``slots`` while a request is in flight, and remembers the HTTP status of each chart
        response, so failures are classified by status, not message text."""

        def __init__(self, timeout_s: float, slots=None) -> None:
            super().__init__(impersonate="chrome")
            self.timeout_s = timeout_s
            self.slots = slots if slots is not None else contextlib.nullcontext()
            self.chart_statuses: list[int] = []

        def request(self, method, url, *args, **kwargs):
            # yfinance hard-codes 10 s for its time-zone probe and 30 s for cookie and
            # crumb; one setting bounds them all.
            asked = kwargs.get("timeout")
            kwargs["timeout"] = min(asked, self.timeout_s) if asked else self.timeout_s
            # Only the request itself holds a slot: parsing and writing happen outside,
            # so the run keeps every slot busy while other workers do that CPU work.
            with self.slots:
                response = super().request(method, url, *args, **kwargs)
            if CHART_PATH in str(url):
                self.chart_statuses.append(response.status_code)
            return response

    return RecordingSession


class YFinanceClient:
    """One per worker process: a session kept open (cookie and crumb fetched once), the
    time-zone cache in ``cache_dir`` (yfinance's default folder when empty)."""

    def __init__(
        self, request_timeout_s: float = 10.0, cache_dir: str = "", request_slots=None
    ) -> None:
        import yfinance as yf

        # yfinance 1.7 calls pandas APIs that pandas 3 deprecates, once per symbol.
        warnings.filterwarnings("ignore", message="The inplace keyword", module="yfinance")
        if cache_dir:
            # yfinance creates the folder unless it exists, and a worker that loses the race
            # to another one doing so runs without the cache: a second request per symbol.
            os.makedirs(cache_dir, exist_ok=True)
            yf.set_tz_cache_location(cache_dir)
        # Raise instead of logging and returning an empty frame.
        yf.config.debug.hide_exceptions = False
        self.request_timeout_s = request_timeout_s
        self.session = _recording_session_class()(request_timeout_s, request_slots)

    def history(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        import peewee
        import yfinance as yf
        from curl_cffi.requests.exceptions import RequestException
        from yfinance.data import YfData
        from yfinance.exceptions import YFRateLimitError

        self.session.chart_statuses.clear()
        # yfinance keeps responses of its time-zone probe in an in-process LRU cache
        # (YfData.cache_get, an internal), a failed one included: a retry would get the
        # same 503 back without asking. Pinned by test_yahoo_retries_a_failed_time_zone_probe.
        YfData.cache_get.cache_clear()
        ticker = yf.Ticker(symbol, session=self.session)
        # yfinance asks Yahoo for the symbol's time zone (a chart request of its own) unless
        # this host's time-zone cache has it. Known from its exchange, it is set on the ticker
        # (``_tz``, the attribute yfinance 1.7 looks at first; the request counts of
        # test_yahoo_loads_then_refreshes_through_the_real_client pin it). Every symbol's
        # first load cost two requests, and with several worker hosts a range lands on
        # another host than last hour about half the time: a second request for each of its
        # symbols, against the same per-address limit.
        ticker._tz = exchange_timezone(symbol)
        try:
            frame = ticker.history(
                start=start.to_pydatetime(),
                end=end.to_pydatetime(),
                interval="1h",
                prepost=False,
                auto_adjust=False,
                actions=True,
                repair=False,
                timeout=self.request_timeout_s,
            )
        except YFRateLimitError:
            raise RateLimitedError(
                f"{symbol}: Yahoo Finance rate-limited the request (HTTP 429)"
            ) from None
        except Exception as exc:
            error = self._classify(symbol, exc)
            if error is not None:
                raise error from None
            if isinstance(exc, peewee.PeeweeException):
                # yfinance's cookie cache (sqlite) deletes then inserts without a lock: two
                # workers storing a fresh cookie at once collide. The next attempt reads it.
                raise TransientSourceError(
                    f"{symbol}: yfinance's cache was written by another worker at the same "
                    f"moment ({type(exc).__name__}: {exc})"
                ) from None
            if isinstance(exc, RequestException):
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                # curl appends a pointer to its manual to every error: half the line.
                reason = reason.split(". See https://curl.se/", 1)[0]
                raise YahooUnavailableError(
                    f"{symbol}: no answer from Yahoo Finance ({type(exc).__name__}: {reason}; "
                    f"request timeout {self.request_timeout_s:g} s)"
                ) from None
            raise
        return frame

    def _classify(self, symbol: str, exc: Exception) -> Exception | None:
        """The outcome the chart endpoint's statuses give ``exc``; None when they say
        nothing (no chart response, or a failure that is not about the answer)."""
        from yfinance.exceptions import YFPricesMissingError

        statuses = self.session.chart_statuses
        if 429 in statuses:
            return RateLimitedError(f"{symbol}: Yahoo Finance rate-limited the request (HTTP 429)")
        server_errors = [s for s in statuses if s >= 500]
        if server_errors:
            return YahooUnavailableError(
                f"{symbol}: Yahoo Finance answered HTTP {server_errors[-1]} (server error)"
            )
        reason = getattr(exc, "rationale", None) or str(exc)
        if 404 in statuses:
            return SymbolNotFoundError(
                f"{symbol}: Yahoo Finance does not know this symbol (HTTP 404: {reason})"
            )
        client_errors = [s for s in statuses if s >= 400]
        if client_errors:
            return SourceError(
                f"{symbol}: Yahoo Finance refused the request (HTTP {client_errors[-1]}: {reason})"
            )
        if statuses and statuses[-1] == 200 and isinstance(exc, YFPricesMissingError):
            return _EmptyWindow()
        return None


class _EmptyWindow(Exception):
    """Yahoo answered 200 for a known symbol, with no bars in the window."""


class YahooSource(BarSource):
    name = "yahoo"
    max_history = MAX_HOURLY_HISTORY
    # Yahoo back-adjusts intraday prices for splits but not volume (yfinance-cache corrects
    # it: "Volume not split-adjusted"); older stored bars follow the same convention.
    split_adjusts_volume = False
    #: Fetching waits on the network: run up to max_concurrent_requests workers, not one
    #: per core.
    network_bound = True

    @staticmethod
    def preload() -> None:
        """Import yfinance (~0.3 s) in the step process, so the workers forked from it do
        not each import it again."""
        import curl_cffi.requests  # noqa: F401
        import yfinance  # noqa: F401

    def __init__(
        self,
        downloader: Downloader | None = None,
        *,
        request_timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
        cache_dir: str = "",
        request_slots=None,
    ) -> None:
        if downloader is None:
            downloader = YFinanceClient(request_timeout_s, cache_dir, request_slots).history
        self._downloader = downloader
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s

    def _download(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        start = max(start, end - MAX_HOURLY_HISTORY)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientSourceError),
            wait=tenacity.wait_exponential_jitter(initial=self.backoff_s, jitter=self.backoff_s),
            stop=tenacity.stop_after_attempt(self.attempts),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            frame = retrying(self._downloader, symbol, start, end)
        except _EmptyWindow:
            return normalize_yfinance_frame(pd.DataFrame(), symbol)
        except TransientSourceError as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise type(exc)(f"{exc}; gave up after {attempts} attempt(s)") from None
        return normalize_yfinance_frame(frame, symbol)


def _log_retry(state: tenacity.RetryCallState) -> None:
    logging.getLogger(__name__).warning(
        "%s; retrying in %.1f s (attempt %d)",
        state.outcome.exception() if state.outcome else "failed",
        state.next_action.sleep if state.next_action else 0,
        state.attempt_number + 1,
    )
