"""A local server that answers the way Yahoo Finance does, for yfinance's own HTTP client.

yfinance (curl_cffi inside) honours ``HTTPS_PROXY`` and takes its CA file from
``CURL_CA_BUNDLE``/``REQUESTS_CA_BUNDLE``. This server is that proxy: it accepts ``CONNECT``
for any Yahoo host, terminates TLS itself with a throw-away CA (trustme), and answers the
requests yfinance 1.7 makes: the cookie host, ``getcrumb`` and ``/v8/finance/chart/{symbol}``
(the time-zone probe and the hourly history), with NYSE sessions from exchange-calendars.

Faults and conditions are set per symbol, so one test or one benchmark can mix them: rate
limits, 5xx with an HTML body or Yahoo's JSON error body, hangs past the client's timeout,
"No data found, symbol may be delisted", valid symbols with no rows, dropped hours, splits
(prices before the split back-adjusted, as Yahoo does for intraday bars), dividends, a clock
inside a session (the in-progress bar plus Yahoo's unaligned live row) and a service time.
It counts requests in flight so tests can assert the concurrency limit.
"""

import json
import ssl
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import trustme

NEW_YORK = "America/New_York"
HOURLY_HISTORY = pd.Timedelta(days=730)
DELISTED = "No data found, symbol may be delisted"


@dataclass
class Fault:
    """What the chart endpoint does for a symbol: ``mode`` for the first ``times`` chart
    requests (every request when ``times`` is None), then it answers normally."""

    mode: str  # 429 | 500_html | 503_json | hang | not_found
    times: int | None = None


@dataclass
class Split:
    ex_date: str  # the session the split takes effect (New York date)
    numerator: float
    denominator: float
    # False: prices are back-adjusted but no split event is sent (Yahoo does this too).
    announced: bool = True


@dataclass
class ServerStats:
    chart_requests: Counter = field(default_factory=Counter)  # by symbol
    hosts: Counter = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    # By the client's address (Yahoo limits each address on its own).
    in_flight_by_address: Counter = field(default_factory=Counter)
    peak_by_address: Counter = field(default_factory=Counter)


@lru_cache(maxsize=4)
def _grid(end: pd.Timestamp) -> pd.DataFrame:
    """Every NYSE hourly bar start (UTC) in the 730 days before ``end``, with its session's
    open and close: bars start at the open and every hour after; the last one ends at the
    close (30 minutes on a full day, 12:30-13:00 on an early close)."""
    calendar = xcals.get_calendar(
        "XNYS",
        start=(end - HOURLY_HISTORY - pd.Timedelta(days=7)).strftime("%Y-%m-%d"),
        end=(end + pd.Timedelta(days=7)).strftime("%Y-%m-%d"),
    )
    sessions = calendar.schedule
    sessions = sessions[(sessions["close"] > end - HOURLY_HISTORY) & (sessions["open"] <= end)]
    rows = []
    for session, (open_, close) in sessions[["open", "close"]].iterrows():
        start = open_
        while start < close:
            rows.append((start, open_, close, session))
            start += pd.Timedelta(hours=1)
    return pd.DataFrame(rows, columns=["start", "open", "close", "session"]).set_index("start")


QUOTE_PRICES = ("open", "high", "low", "close")


@lru_cache(maxsize=4)
def _clock_meta(now: pd.Timestamp) -> tuple[int, str, dict]:
    """The UTC offset, zone name and current trading period at ``now``: the same for every
    symbol, so built once per clock."""
    local = now.tz_convert(NEW_YORK)
    offset, zone = int(local.utcoffset().total_seconds()), local.tzname()
    grid = _grid(now)
    today = grid[grid["session"] == grid["session"].iloc[-1]]
    open_, close = today["open"].iloc[0], today["close"].iloc[0]

    def period(start: pd.Timestamp, end: pd.Timestamp) -> dict:
        return {
            "timezone": zone,
            "start": int(start.timestamp()),
            "end": int(end.timestamp()),
            "gmtoffset": offset,
        }

    current = {
        "pre": period(open_ - pd.Timedelta(hours=5.5), open_),
        "regular": period(open_, close),
        "post": period(close, close + pd.Timedelta(hours=4)),
    }
    return offset, zone, current


@lru_cache(maxsize=64)
def _trading_periods(now: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp) -> list:
    """The sessions a window touches, as Yahoo lists them: the same for every symbol asked
    about that window, so built once (the server must not be what a benchmark times)."""
    grid = _grid(now)
    sessions = grid[(grid["close"] > start) & (grid["open"] < min(end, now))]
    periods = []
    for open_, close in sessions[["open", "close"]].drop_duplicates().itertuples(index=False):
        local = pd.Timestamp(open_).tz_convert(NEW_YORK)
        periods.append(
            [
                {
                    "timezone": local.tzname(),
                    "start": int(open_.timestamp()),
                    "end": int(close.timestamp()),
                    "gmtoffset": int(local.utcoffset().total_seconds()),
                }
            ]
        )
    return periods


class FakeYahoo:
    """Start with ``start()`` (or as a context manager); ``env()`` gives the variables that
    send yfinance's requests here."""

    def __init__(
        self,
        now: pd.Timestamp | str | None = None,
        latency_s: float = 0.0,
        address: str = "127.0.0.1",
    ) -> None:
        self.address = address
        now = pd.Timestamp(now if now is not None else pd.Timestamp.now(tz="UTC"))
        self.now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
        self.latency_s = latency_s
        self.hang_s = 30.0
        self.faults: dict[str, Fault] = {}
        self.empty: set[str] = set()  # valid symbols with no bars at all
        self.dropped: dict[str, set[pd.Timestamp]] = {}
        self.splits: dict[str, list[Split]] = {}
        self.dividends: dict[str, dict[str, float]] = {}
        self.stats = ServerStats()
        self._bars: dict[tuple, pd.DataFrame] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._folder = Path(tempfile.mkdtemp(prefix="fake-yahoo-"))
        ca = trustme.CA()
        leaf = ca.issue_cert("*.yahoo.com", "*.finance.yahoo.com", "yahoo.com")
        self.ca_file = self._folder / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.tls)
        self.tls.set_alpn_protocols(["http/1.1"])
        self._httpd: ThreadingHTTPServer | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FakeYahoo":
        handler = type("Handler", (_Handler,), {"yahoo": self})
        self._httpd = ThreadingHTTPServer((self.address, 0), handler)
        self._httpd.daemon_threads = True
        # Many workers open tunnels at once; the default backlog of 5 drops some.
        self._httpd.socket.listen(256)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeYahoo":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def proxy_url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://{self.address}:{self._httpd.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Environment for processes whose yfinance should talk to this server."""
        ca = str(self.ca_file)
        return {
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": ca,
            "REQUESTS_CA_BUNDLE": ca,
        }

    # --- what it serves -----------------------------------------------------------------

    def bars(self, symbol: str, as_served: bool = True) -> pd.DataFrame:
        """The symbol's hourly bars up to the clock, as the server serves them: the bar in
        progress (if the clock is inside a session) is partial, splits are back-applied to
        earlier prices and dropped hours are left out (``as_served=False`` keeps them)."""
        key = (
            symbol,
            self.now,
            as_served,
            repr(self.splits.get(symbol)),
            tuple(sorted(self.dropped.get(symbol, ()))) if as_served else (),
            symbol in self.empty,
        )
        if self._bars and next(iter(self._bars))[1] != self.now:
            self._bars.clear()  # the clock moved: yesterday's frames are never asked again
        if key not in self._bars:
            # Built once per symbol and clock: the server must not be what a benchmark times.
            self._bars[key] = self._build_bars(symbol, as_served)
        return self._bars[key]

    def advance(self, delta: pd.Timedelta) -> None:
        """Move the clock by ``delta``, the frames of the symbols served so far built for the
        new time at once: a benchmark's timed refresh must not wait for this server."""
        served = {key[0] for key in self._bars}
        self.now = self.now + delta
        for symbol in sorted(served):
            self.bars(symbol)

    def _build_bars(self, symbol: str, as_served: bool) -> pd.DataFrame:
        grid = _grid(self.now)
        grid = grid[grid.index <= self.now]
        starts = grid.index
        seed = zlib.crc32(symbol.encode())
        rng = np.random.default_rng(seed)
        n = len(starts)
        # Values depend on the bar's time only, never on the window asked for.
        hours = ((starts - pd.Timestamp("2020-01-01", tz="UTC")) / pd.Timedelta(hours=1)).to_numpy()
        phase = rng.uniform(0, 2 * np.pi)
        base = rng.uniform(20, 400)
        steps = np.sin(hours / 37.0 + phase) * 0.004 + np.cos(hours / 11.0) * 0.002
        close = base * np.exp(np.cumsum(steps) * 0.5 + 0.05 * np.sin(hours / 500.0))
        open_ = np.concatenate([[close[0]], close[:-1]]) if n else close
        spread = 0.002 * close
        frame = pd.DataFrame(
            {
                "open": open_.round(4),
                "high": (np.maximum(open_, close) + spread).round(4),
                "low": (np.minimum(open_, close) - spread).round(4),
                "close": close.round(4),
                "volume": (1e5 + 5e4 * np.abs(np.sin(hours / 5.0))).round(),
            },
            index=starts,
        )
        if n and self.now < grid["close"].iloc[-1] and self.now >= starts[-1]:
            # The bar in progress: only what traded so far.
            done = (self.now - starts[-1]) / pd.Timedelta(hours=1)
            last = frame.index[-1]
            frame.loc[last, "volume"] = round(frame.loc[last, "volume"] * max(done, 0.05))
        for split in self.splits.get(symbol, []):
            ex = pd.Timestamp(split.ex_date).date()
            before = (grid["session"].dt.date < ex).to_numpy()
            ratio = split.numerator / split.denominator
            frame.loc[before, ["open", "high", "low", "close"]] = (
                frame.loc[before, ["open", "high", "low", "close"]] / ratio
            ).round(4)
        if as_served and symbol in self.dropped:
            frame = frame.drop(index=[t for t in self.dropped[symbol] if t in frame.index])
        if symbol in self.empty:
            frame = frame.iloc[0:0]
        return frame

    def in_progress(self) -> bool:
        grid = _grid(self.now)
        inside = grid[(grid.index <= self.now)]
        return bool(len(inside)) and self.now < inside["close"].iloc[-1]

    # --- the chart endpoint -------------------------------------------------------------

    def _fault_for(self, symbol: str) -> str | None:
        with self._lock:
            fault = self.faults.get(symbol)
            if fault is None:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
            return fault.mode

    def chart(self, symbol: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        """One chart answer, taking ``latency_s`` in all (the service time)."""
        started = time.monotonic()
        answer = self._chart(symbol, query)
        if self.latency_s:
            time.sleep(max(0.0, self.latency_s - (time.monotonic() - started)))
        return answer

    def _chart(self, symbol: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        with self._lock:
            self.stats.chart_requests[symbol] += 1
        mode = self._fault_for(symbol)
        if mode == "hang":
            self._stopping.wait(self.hang_s)
            return 504, "text/html", b"<html>Gateway Timeout</html>"
        if mode == "429":
            return 429, "text/html", b"Too Many Requests\r\n"
        if mode == "500_html":
            return 500, "text/html", b"<html><body>Will be right back...</body></html>"
        if mode == "503_json":
            body = _error_body("Service Unavailable", "Service Unavailable")
            return 503, "application/json", body
        if mode == "not_found":
            return 404, "application/json", _error_body("Not Found", DELISTED)
        if query.get("interval") == "1d":
            return 200, "application/json", self._daily(symbol)
        start = pd.Timestamp(int(query["period1"]), unit="s", tz="UTC")
        end = pd.Timestamp(int(query["period2"]), unit="s", tz="UTC")
        if start < self.now - HOURLY_HISTORY:
            return (
                422,
                "application/json",
                _error_body(
                    "Unprocessable Entity",
                    f"1h data not available for startTime={int(start.timestamp())}. The requested "
                    "range must be within the last 730 days.",
                ),
            )
        return 200, "application/json", self._hourly(symbol, start, end)

    def _meta(self, symbol: str, granularity: str, price: float | None) -> dict:
        offset, zone, current = _clock_meta(self.now)
        return {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "NYQ",
            "fullExchangeName": "NYSE",
            "instrumentType": "EQUITY",
            "firstTradeDate": 345479400,
            "regularMarketTime": int(self.now.timestamp()),
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": zone,
            "exchangeTimezoneName": NEW_YORK,
            "regularMarketPrice": price,
            "chartPreviousClose": price,
            "priceHint": 2,
            "currentTradingPeriod": current,
            "dataGranularity": granularity,
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "ytd", "max"],
        }

    def _daily(self, symbol: str) -> bytes:
        # The time-zone probe (range=1d, interval=1d): the newest session as one daily bar.
        bars = self.bars(symbol)
        meta = self._meta(symbol, "1d", float(bars["close"].iloc[-1]) if len(bars) else None)
        result: dict = {"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}
        if len(bars):
            grid = _grid(self.now)
            last = grid.loc[bars.index[-1], "session"]
            day = bars[grid.loc[bars.index, "session"] == last]
            result["timestamp"] = [int(grid.loc[day.index[0], "open"].timestamp())]
            quote = {
                "open": [float(day["open"].iloc[0])],
                "high": [float(day["high"].max())],
                "low": [float(day["low"].min())],
                "close": [float(day["close"].iloc[-1])],
                "volume": [int(day["volume"].sum())],
            }
            result["indicators"] = {
                "quote": [quote],
                "adjclose": [{"adjclose": quote["close"]}],
            }
        return json.dumps({"chart": {"result": [result], "error": None}}).encode()

    def _hourly(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> bytes:
        bars = self.bars(symbol)
        index = bars.index
        first, stop = index.searchsorted(start), index.searchsorted(end)
        meta = self._meta(symbol, "1h", float(bars["close"].iloc[-1]) if len(bars) else None)
        meta["tradingPeriods"] = _trading_periods(self.now, start, end)
        result: dict = {"meta": meta, "indicators": {"quote": [{}]}}
        if stop > first:
            window = bars.iloc[first:stop]
            stamps = (window.index.asi8 // 10**9).tolist()
            quote = {c: window[c].to_numpy(dtype=float).tolist() for c in QUOTE_PRICES}
            quote["volume"] = window["volume"].to_numpy(dtype="int64").tolist()
            if stop == len(index) and self.now < end and self.in_progress():
                # Yahoo's live row: the last trade, stamped with its own (unaligned) time.
                price = quote["close"][-1]
                stamps.append(int(self.now.timestamp()))
                for c in QUOTE_PRICES:
                    quote[c].append(price)
                quote["volume"].append(0)
            result["timestamp"] = stamps
            result["indicators"] = {"quote": [quote]}
        events = self._events(symbol, start, end)
        if events:
            result["events"] = events
        return json.dumps({"chart": {"result": [result], "error": None}}).encode()

    def _events(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> dict:
        events: dict = {}
        for split in self.splits.get(symbol, []):
            when = _session_open(split.ex_date)
            if split.announced and start <= when < end:
                events.setdefault("splits", {})[str(int(when.timestamp()))] = {
                    "date": int(when.timestamp()),
                    "numerator": split.numerator,
                    "denominator": split.denominator,
                    "splitRatio": f"{split.numerator:g}:{split.denominator:g}",
                }
        for ex_date, amount in self.dividends.get(symbol, {}).items():
            when = _session_open(ex_date)
            if start <= when < end:
                events.setdefault("dividends", {})[str(int(when.timestamp()))] = {
                    "amount": amount,
                    "date": int(when.timestamp()),
                }
        return events


def _session_open(day: str) -> pd.Timestamp:
    return pd.Timestamp(f"{day} 09:30", tz=NEW_YORK).tz_convert("UTC")


def _error_body(code: str, description: str) -> bytes:
    error = {"code": code, "description": description}
    return json.dumps({"chart": {"result": None, "error": error}}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    yahoo: FakeYahoo
    tunnel_host = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        pass  # quiet: tests read the stats, not an access log

    def do_CONNECT(self) -> None:  # noqa: N802 (http.server's name)
        self.tunnel_host = self.path.rsplit(":", 1)[0]
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = self.yahoo.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        self.connection = tls
        self.rfile = tls.makefile("rb", -1)
        self.wfile = tls.makefile("wb", 0)
        self.close_connection = False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        yahoo = self.yahoo
        host = self.tunnel_host or self.headers.get("Host", "")
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with yahoo._lock:
            yahoo.stats.hosts[host] += 1
            yahoo.stats.in_flight += 1
            yahoo.stats.peak_in_flight = max(yahoo.stats.peak_in_flight, yahoo.stats.in_flight)
            address = self.client_address[0]
            yahoo.stats.in_flight_by_address[address] += 1
            yahoo.stats.peak_by_address[address] = max(
                yahoo.stats.peak_by_address[address], yahoo.stats.in_flight_by_address[address]
            )
        finished = False
        try:
            headers: dict[str, str] = {}
            if host == "fc.yahoo.com":
                status, kind, body = 404, "text/html", b"<html>Not Found</html>"
                # yfinance caches this cookie and reads its expiry: Yahoo's lasts a year.
                expires = formatdate(time.time() + 365 * 86400, usegmt=True)
                headers["Set-Cookie"] = (
                    f"A3=d=fake&S=fake; Expires={expires}; Max-Age=31557600; "
                    "Domain=.yahoo.com; Path=/; Secure; HttpOnly; SameSite=None"
                )
            elif url.path == "/v1/test/getcrumb":
                status, kind, body = 200, "text/plain", b"fakecrumb.123"
            elif url.path.startswith("/v8/finance/chart/"):
                symbol = url.path.rsplit("/", 1)[1]
                status, kind, body = yahoo.chart(symbol, query)
            else:
                status, kind, body = 404, "application/json", b'{"error": "not served here"}'
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            # The request ends when its answer is sent: counted out before the last bytes
            # go, or the client could already be asking again while it still counts.
            finished = True
            with yahoo._lock:
                yahoo.stats.in_flight -= 1
                yahoo.stats.in_flight_by_address[self.client_address[0]] -= 1
            self.wfile.write(body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        finally:
            if not finished:
                with yahoo._lock:
                    yahoo.stats.in_flight -= 1
                    yahoo.stats.in_flight_by_address[self.client_address[0]] -= 1
