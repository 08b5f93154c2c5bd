"""The yahoo source through yfinance's own HTTP client (curl_cffi), against a local server
that answers the way Yahoo does (fake_yahoo.py): loads, re-runs, and every fault mode with
its typed error, whether the step would retry it, its message, and nothing written.

Each case runs in the isolated worker processes production uses (forked here, so they see
the proxy variables set for the test), each with its own yfinance cache folder.
"""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from mltrading_assets.db.symbols import add_symbols
from mltrading_assets.names import MetadataKeys
from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets.trading_calendar import nyse_calendar
from mltrading_assets.workers.bar_task import load_market_data
from mltrading_assets.workers.harness import WorkSpec, init_worker
from mltrading_assets.workers.isolation import FailureKind, SymbolOutcome, run_isolated
from mltrading_assets.workers.slots import RequestSlots, SharedRequestSlots
from mltrading_assets_tests.conftest import table_count
from mltrading_assets_tests.fake_yahoo import DELISTED, FakeYahoo, Fault, Split


def last_sessions(count: int = 2) -> pd.DataFrame:
    """The newest NYSE sessions that have closed (the server's clock is set from them, so
    the tests do not depend on today's date)."""
    now = pd.Timestamp.now(tz="UTC")
    schedule = nyse_calendar().schedule
    return schedule[schedule["close"] < now].iloc[-count:]


def after_close() -> pd.Timestamp:
    return last_sessions(1)["close"].iloc[-1] + pd.Timedelta(hours=2)


def yahoo_spec(database_url: str, folder, **source) -> WorkSpec:
    return WorkSpec(
        database_url=database_url,
        source={
            "kind": "yahoo",
            "request_timeout_s": 2.0,
            "retry_attempts": 3,
            "retry_backoff_s": 0.05,
            "cache_dir": str(folder / "yfinance-cache"),
            **source,
        },
        history_days=30,
    )


def load(spec: WorkSpec, symbols: list[str], workers: int = 2) -> dict[str, SymbolOutcome]:
    outcomes = run_isolated(
        load_market_data,
        symbols,
        initializer=init_worker,
        initargs=(spec,),
        workers=workers,
        timeout_seconds=120,
    )
    return {outcome.symbol: outcome for outcome in outcomes}


def stored(engine: sa.Engine, symbol: str) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(
            sa.text(
                'SELECT "timestamp", open, high, low, close, volume FROM public.market_data '
                "WHERE symbol = :s AND source = 'yahoo' ORDER BY 1"
            ),
            conn,
            params={"s": symbol},
        )
    return frame.set_index("timestamp")


# A symbol whose exchange we do not know (a currency pair): yfinance asks Yahoo its time zone.
PROBED = "EURUSD=X"


def test_yahoo_loads_then_refreshes_through_the_real_client(yahoo, spec, db):
    window_start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=spec.history_days)
    # One worker: two processes writing yfinance's sqlite cache at once can lose a cached
    # time zone or cost a retry (handled, see the cache rows in sources/yahoo.py), which
    # the request counts below would see.
    outcomes = load(spec, ["AAPL", "MSFT", PROBED], workers=1)
    assert all(o.ok for o in outcomes.values()), outcomes
    for symbol in ("AAPL", "MSFT"):
        served = yahoo.bars(symbol)
        served = served[served.index >= window_start]
        rows = stored(db, symbol)
        assert list(rows.index) == list(served.index)  # the same hours, bar start in UTC
        assert rows["close"].to_numpy() == pytest.approx(served["close"].to_numpy())
        assert rows["volume"].to_numpy() == pytest.approx(served["volume"].to_numpy())
        # Bars start on the exchange's grid: 9:30, 10:30 … New York time.
        minutes = {t.tz_convert("America/New_York").minute for t in rows.index}
        assert minutes == {30}
    # First load: the history, nothing more where the exchange gives the time zone (a host
    # that never saw the symbol asks nothing else); yfinance's time-zone probe first where
    # it does not.
    assert yahoo.stats.chart_requests == {"AAPL": 1, "MSFT": 1, PROBED: 2}

    again = load(spec, ["AAPL", "MSFT", PROBED], workers=1)
    assert all(o.ok and o.details["rows_inserted"] == 0 for o in again.values())
    # A probed time zone is cached in the cache folder: a refresh is one request per symbol.
    assert yahoo.stats.chart_requests == {"AAPL": 2, "MSFT": 2, PROBED: 3}


FAULTS = [
    # mode, kind, words of the message
    ("429", "transient", "rate-limited the request (HTTP 429)"),
    ("500_html", "transient", "answered HTTP 500 (server error)"),
    ("503_json", "transient", "answered HTTP 503 (server error)"),
    ("hang", "transient", "no answer from Yahoo Finance"),
    ("not_found", "bad_input", f"does not know this symbol (HTTP 404: {DELISTED})"),
]


@pytest.mark.parametrize(("mode", "kind", "words"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_on_a_symbol_already_loaded_is_typed_and_writes_nothing(
    yahoo, spec, db, mode, kind, words
):
    assert load(spec, ["AAPL"])["AAPL"].ok
    before = stored(db, "AAPL")
    # A new session's bars are waiting, but the source fails.
    yahoo.now = yahoo.now + pd.Timedelta(days=3)
    yahoo.faults["AAPL"] = Fault(mode)
    yahoo.hang_s = 5.0
    spec = yahoo_spec(spec.database_url, _folder(spec), request_timeout_s=0.5)

    outcome = load(spec, ["AAPL"])["AAPL"]

    assert not outcome.ok
    assert outcome.kind == kind
    assert words in outcome.error and outcome.error.startswith("AAPL: ")
    # A transient fault is retried (here 3 attempts), then by the step's RetryPolicy;
    # "no such symbol" is not retried anywhere.
    assert FailureKind(outcome.kind).retryable == (kind == "transient")
    if kind == "transient":
        assert "gave up after 3 attempt(s)" in outcome.error
    pd.testing.assert_frame_equal(stored(db, "AAPL"), before)


def _folder(spec: WorkSpec):
    from pathlib import Path

    return Path(spec.source["cache_dir"]).parent


def test_an_unknown_symbol_is_not_found_on_first_sight(yahoo, spec, db):
    yahoo.faults["ZZZZ"] = Fault("not_found")
    outcome = load(spec, ["ZZZZ"])["ZZZZ"]
    assert outcome.kind == "bad_input"
    assert "ZZZZ: Yahoo Finance does not know this symbol (HTTP 404" in outcome.error
    assert table_count(db, "market_data", symbol="ZZZZ") == 0


def test_a_passing_outage_costs_retries_not_the_symbol(yahoo, spec, db):
    yahoo.faults["AAPL"] = Fault("503_json", times=2)
    yahoo.faults["MSFT"] = Fault("429", times=2)
    outcomes = load(spec, ["AAPL", "MSFT"])
    assert all(o.ok for o in outcomes.values()), outcomes
    assert table_count(db, "market_data", symbol="AAPL") > 100


def test_yahoo_retries_a_failed_time_zone_probe(yahoo, spec, db):
    # yfinance remembers the probe's response in an in-process cache; its own one retry
    # (other cookie strategy) fails too, so only a fresh request on our retry can succeed.
    yahoo.faults[PROBED] = Fault("500_html", times=2)
    outcome = load(spec, [PROBED])[PROBED]
    assert outcome.ok, outcome.error
    assert table_count(db, "market_data", symbol=PROBED) > 100


def test_a_valid_symbol_without_bars_in_the_window_says_so(yahoo, spec, db):
    yahoo.empty.add("QUIET")
    outcome = load(spec, ["QUIET"])["QUIET"]
    assert outcome.ok
    assert outcome.details["bars_fetched"] == 0
    assert "yahoo has no bars for QUIET" in outcome.details[MetadataKeys.NO_BARS]


def test_unreachable_yahoo_is_a_transient_connection_error(monkeypatch, spec, db):
    closed = FakeYahoo().start()
    env = closed.env()
    closed.stop()  # nothing listens on its port any more
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    outcome = load(spec, ["AAPL"])["AAPL"]
    assert outcome.kind == "transient"
    assert "AAPL: no answer from Yahoo Finance" in outcome.error


def test_the_bar_in_progress_is_stored_on_its_hour_and_completed_later(yahoo, spec, db):
    session = last_sessions(1).iloc[-1]
    yahoo.now = session["open"] + pd.Timedelta(hours=2, minutes=40)  # 12:10 New York
    assert load(spec, ["AAPL"])["AAPL"].ok
    rows = stored(db, "AAPL")
    in_progress = session["open"] + pd.Timedelta(hours=2)
    # Yahoo's live row (12:10) is folded into the 11:30 bar, never stored on its own.
    assert rows.index[-1] == in_progress
    partial_volume = rows["volume"].iloc[-1]

    yahoo.now = session["close"] + pd.Timedelta(minutes=30)
    assert load(spec, ["AAPL"])["AAPL"].ok
    rows = stored(db, "AAPL")
    assert rows.loc[in_progress, "volume"] > partial_volume
    assert rows.loc[in_progress, "volume"] == pytest.approx(
        yahoo.bars("AAPL").loc[in_progress, "volume"]
    )


def test_splits_in_the_chart_answer_do_not_break_the_load(yahoo, spec, db):
    # Yahoo sends split and dividend events with intraday bars (already back-adjusted).
    ex_date = last_sessions(5).index[0].strftime("%Y-%m-%d")
    yahoo.splits["AAPL"] = [Split(ex_date, 2, 1)]
    yahoo.dividends["AAPL"] = {ex_date: 0.25}
    assert load(spec, ["AAPL"])["AAPL"].ok
    rows = stored(db, "AAPL")
    served = yahoo.bars("AAPL")
    assert rows["close"].iloc[0] == pytest.approx(served.loc[rows.index[0], "close"])


def test_materialize_cli_runs_both_assets_from_yahoo_at_the_request_limit(
    yahoo, database_url, dagster_home, tmp_path, db, instance
):
    # End to end as a user runs it: `mltrading materialize` with MLTRADING_SOURCE=yahoo,
    # the multiprocess executor, worker processes, yfinance, the local Yahoo.
    symbols = [f"Y{i:02d}" for i in range(15)]
    yahoo.latency_s = 0.2
    with db.begin() as conn:
        add_symbols(conn, symbols)
    env = {
        **os.environ,
        "MLTRADING_DATABASE_URL": database_url,
        "DAGSTER_HOME": str(dagster_home),
        "MLTRADING_SOURCE": "yahoo",
        "MLTRADING_YFINANCE_CACHE_DIR": str(tmp_path / "yfinance-cache"),
        "MLTRADING_MAX_CONCURRENT_REQUESTS": "5",
        "MLTRADING_WORKERS": "2",  # what a 2-core machine gets
    }
    result = subprocess.run(
        [sys.executable, "-m", "mltrading_assets.cli", "materialize"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for symbol in symbols:
        bars = table_count(db, "market_data", symbol=symbol, source="yahoo")
        assert bars > 1000
        assert table_count(db, "feature_engineered_data", symbol=symbol, source="yahoo") == bars
    # Fetching keeps the request limit busy on 2 cores, and never goes over it.
    assert 3 <= yahoo.stats.peak_in_flight <= 5


def test_a_request_slot_held_by_a_killed_worker_is_released():
    # A worker killed mid-request (timeout, crash) must not keep its slot: the next
    # requests of the step would otherwise run below the limit, or not at all.
    import multiprocessing
    import signal

    slots = RequestSlots.create(2)
    try:
        taken = multiprocessing.get_context("fork").Event()

        def hold_forever() -> None:
            with slots:
                taken.set()
                time.sleep(60)

        holder = multiprocessing.get_context("fork").Process(target=hold_forever)
        holder.start()
        assert taken.wait(10)
        other = RequestSlots(slots.folder, slots.count)
        with other:  # one slot is still free
            assert other._held is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        both = [RequestSlots(slots.folder, slots.count) for _ in range(2)]
        started = time.monotonic()
        with both[0], both[1]:
            assert {both[0]._held, both[1]._held} == {0, 1}
        assert time.monotonic() - started < 5
    finally:
        slots.remove()


def test_a_shared_slot_goes_to_its_waiter_when_released_or_when_its_holder_dies(
    database_url, engine
):
    # Hosts share their slots through PostgreSQL: a waiter is told of a release at once
    # (no asking every few milliseconds), and a holder that dies without telling frees its
    # slot with its session all the same.
    import threading

    scope = f"test-{os.getpid()}-{time.monotonic_ns()}"
    holder = SharedRequestSlots(scope, 1, database_url)
    waiter = SharedRequestSlots(scope, 1, database_url)
    got: list[float] = []

    def wait_for_the_slot() -> None:
        with waiter:
            got.append(time.monotonic())

    holder.__enter__()
    thread = threading.Thread(target=wait_for_the_slot)
    thread.start()
    time.sleep(0.5)
    assert got == []  # the only slot is held
    holder.__exit__(None, None, None)
    thread.join(10)
    assert len(got) == 1

    # A holder whose session ends without a release (a killed process):
    holder.__enter__()
    thread = threading.Thread(target=wait_for_the_slot)
    thread.start()
    time.sleep(0.5)
    assert len(got) == 1
    with engine.begin() as other:
        other.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = CAST(CAST(:key AS bigint) AS oid) AND granted"
            ),
            {"key": holder.key & 0xFFFFFFFF},
        )
    thread.join(10)
    assert len(got) == 2
    holder._engine.dispose()
    waiter._engine.dispose()
