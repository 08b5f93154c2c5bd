"""Feature charts drawn when they are looked at.

Each feature materialization links to its symbol's chart here (markdown the Dagster UI shows
behind "Show Markdown") instead of carrying the picture: drawn for every symbol every hour,
the charts were ~12 KB of each ~15 KB feature event (most of the event log) and ~10 ms of
each symbol's work, for pictures almost nobody opens. Drawn on request, a chart costs ~20 ms
when it is opened and always shows the newest stored rows.
"""

import contextlib
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa

from mltrading_assets.charts import CHART_BARS, CHART_COLUMNS, feature_chart_png
from mltrading_assets.db.bars import read_bars
from mltrading_assets.db.engine import create_app_engine
from mltrading_assets.db.feature_rows import recent_features
from mltrading_assets.sources import is_valid_symbol

PATH_PREFIX = "/charts/"
# Charts are drawn one or two at a time (someone clicking in the UI): a small pool suffices.
POOL_SIZE = 2


class _Handler(BaseHTTPRequestHandler):
    server: "ChartServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        address = urlsplit(self.path)
        name = unquote(address.path.removeprefix(PATH_PREFIX))
        if not address.path.startswith(PATH_PREFIX) or not name.endswith(".png"):
            self._text(HTTPStatus.NOT_FOUND, f"no chart at {address.path}: ask /charts/SYMBOL.png")
            return
        symbol = name.removesuffix(".png")
        source = parse_qs(address.query).get("source", ["synthetic"])[0]
        if not is_valid_symbol(symbol):
            self._text(HTTPStatus.NOT_FOUND, f"{symbol!r} is not a symbol")
            return
        try:
            png = self.server.draw(symbol, source)
        except sa.exc.SQLAlchemyError as exc:
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, f"the database did not answer: {exc}")
            return
        if png is None:
            self._text(
                HTTPStatus.NOT_FOUND, f"{symbol}: no feature rows from source {source!r} yet"
            )
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(png)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(png)

    def _text(self, status: HTTPStatus, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        # One line per opened chart would fill the `mltrading ui` terminal for nothing.
        pass


class ChartServer(ThreadingHTTPServer):
    """Draws ``/charts/SYMBOL.png?source=S`` from the stored bars and features."""

    daemon_threads = True

    def __init__(self, database_url: str, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.engine = create_app_engine(
            database_url, pool_size=POOL_SIZE, application_name="mltrading charts"
        )

    def draw(self, symbol: str, source: str) -> bytes | None:
        with self.engine.connect() as conn:
            features = recent_features(conn, symbol, source, CHART_COLUMNS, CHART_BARS)
            if features.empty:
                return None
            bars = read_bars(conn, symbol, source, since=features.index[0])
        return feature_chart_png(bars, features, symbol)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{PATH_PREFIX.rstrip('/')}"

    def server_close(self) -> None:
        super().server_close()
        self.engine.dispose()


@contextlib.contextmanager
def charts_served(database_url: str, host: str, port: int):
    """A chart server on a background thread for the duration of the block."""
    server = ChartServer(database_url, host, port)
    thread = threading.Thread(target=server.serve_forever, name="charts", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
