"""Fault injection on a PostgreSQL server of the suite's own: stopped before a run, restarted
under each step, down for longer than Dagster's connect retries, down for good, and `kill -9`
of the CLI, of the step process and of a symbol worker.

After each fault: nothing of ours is left running, no run is stuck and no pool slot held, and
a rerun converges: no duplicate key, no bar missing against the source, features equal to a
full recompute.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pandas as pd
import psutil
import pytest
import sqlalchemy as sa

from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets.sources.synthetic import SyntheticSource
from mltrading_assets_tests.conftest import run_cli
from mltrading_assets_tests.own_postgres import OwnPostgres
from mltrading_assets_tests.test_bars_stay_true import assert_features_equal_a_full_recompute

AS_OF = "2026-11-20T21:00:00Z"
SYMBOLS = [f"F{i:02d}" for i in range(16)]
HISTORY_DAYS = 365


@pytest.fixture(scope="module")
def server():
    pg = OwnPostgres()
    pg.start()
    yield pg
    pg.close()


class Platform:
    """One fresh database and MLTRADING_HOME on the suite's server, driven through the CLI."""

    def __init__(self, server: OwnPostgres, home, **settings: str) -> None:
        self.server = server
        self.url = server.create_database(f"faults_{uuid.uuid4().hex[:8]}")
        self.env = {
            **os.environ,
            "MLTRADING_DATABASE_URL": self.url,
            "MLTRADING_HOME": str(home),
            "MLTRADING_SYNTHETIC_AS_OF": AS_OF,
            # Each symbol takes 0.5 s, so a fault lands while symbols are in flight.
            "MLTRADING_FAULT_INJECTION": "*=slow",
            **settings,
        }
        self.env.pop("DAGSTER_HOME", None)  # the CLI makes its own under MLTRADING_HOME
        self.log = home / "cli.log"
        self.cli("db", "init")
        self.cli("symbols", "add", *SYMBOLS)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(self.env, *args, check=check)

    def start_materialize(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "mltrading_assets.cli", "materialize"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def scalar(self, sql: str) -> int:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return conn.exec_driver_sql(sql).scalar_one()
        finally:
            engine.dispose()

    def wait_for_rows(self, table: str, cli: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert cli.poll() is None, self.log.read_text()[-3000:]
            if self.scalar(f"SELECT count(*) FROM public.{table}") > 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"no row reached {table} in {timeout} s")

    def assert_nothing_stuck(self) -> None:
        active = self.scalar(
            "SELECT count(*) FROM dagster.runs "
            "WHERE status IN ('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED', 'CANCELING')"
        )
        held = self.scalar(
            "SELECT count(*) FROM dagster.concurrency_slots WHERE run_id IS NOT NULL"
        )
        assert (active, held) == (0, 0), f"{active} runs still active, {held} pool slots held"

    def assert_converged(self) -> None:
        """What a clean load gives: every bar of the source once, features recomputed."""
        assert (
            self.scalar(
                "SELECT count(*) FROM (SELECT 1 FROM public.market_data "
                "GROUP BY symbol, source, timestamp HAVING count(*) > 1) d"
            )
            == 0
        )
        end = pd.Timestamp(AS_OF)
        source = SyntheticSource(as_of=end)
        engine = sa.create_engine(self.url)
        try:
            for symbol in SYMBOLS:
                expected = source.fetch(symbol, end - pd.Timedelta(days=HISTORY_DAYS), end)
                with engine.connect() as conn:
                    stored = pd.read_sql(
                        sa.text(
                            'SELECT "timestamp", close FROM public.market_data '
                            'WHERE symbol = :s ORDER BY "timestamp"'
                        ),
                        conn,
                        params={"s": symbol},
                        index_col="timestamp",
                    )
                assert stored.index.equals(expected.index), f"{symbol}: bars lost or extra"
                assert (stored["close"].to_numpy() == expected["close"].to_numpy()).all()
                assert_features_equal_a_full_recompute(engine, symbol, "synthetic")
        finally:
            engine.dispose()


def left_running(cli: subprocess.Popen) -> list[str]:
    """Processes of the CLI's session still alive (the CLI started its own session)."""
    left = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == cli.pid and process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline())[:120])
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return left


def assert_all_exit(cli: subprocess.Popen, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while left_running(cli) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left_running(cli), left_running(cli)


def step_and_workers(cli: subprocess.Popen, timeout: float = 60) -> tuple[psutil.Process, list]:
    """The step process (forkserver child of the CLI's forkserver) and its symbol workers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Processes come and go while the tree is walked (a CLI helper, a replaced worker).
        with contextlib.suppress(psutil.NoSuchProcess):
            for forkserver in psutil.Process(cli.pid).children():
                if "multiprocessing.forkserver" not in " ".join(forkserver.cmdline()):
                    continue
                for step in forkserver.children():
                    workers = [
                        child
                        for child in step.children()
                        if "multiprocessing" in " ".join(child.cmdline())
                    ]
                    if workers:
                        return step, workers
        time.sleep(0.1)
    raise AssertionError("no step process with workers appeared")


@pytest.fixture
def platform(server, tmp_path):
    if not server.is_running():
        server.start()
    return Platform(server, tmp_path)


def test_a_server_stopped_before_a_run_is_one_line_and_a_clean_exit(platform, server):
    server.stop()
    try:
        done = platform.cli("materialize", "--asset", "market_data", check=False)
    finally:
        server.start()
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot reach the database at")
    assert "Traceback" not in done.stderr
    # dagster-postgres' retry warnings, one line each (not SQLAlchemy's three and a link).
    assert "Background on this error" not in done.stderr
    platform.cli("materialize")
    platform.assert_nothing_stuck()
    platform.assert_converged()


@pytest.mark.parametrize(
    ("table", "down_seconds"),
    [
        ("feature_engineered_data", 1),  # a restart under the feature step
        # Under the bar step, down longer than dagster-postgres' own connect retries (~6 s).
        ("market_data", 8),
    ],
)
def test_a_server_restart_mid_step_costs_retries_not_symbols(platform, server, table, down_seconds):
    cli = platform.start_materialize()
    platform.wait_for_rows(table, cli)
    server.restart(down_seconds=down_seconds)
    assert cli.wait(240) == 0, platform.log.read_text()[-5000:]
    assert_all_exit(cli)
    platform.assert_nothing_stuck()
    platform.assert_converged()


def test_a_server_that_stays_down_fails_the_run_in_bounded_time_and_everything_exits(
    server, tmp_path
):
    platform = Platform(server, tmp_path, MLTRADING_DATABASE_OUTAGE_SECONDS="5")
    cli = platform.start_materialize()
    platform.wait_for_rows("market_data", cli)
    server.stop()
    try:
        code = cli.wait(240)
        assert_all_exit(cli)
    finally:
        server.start()
    output = platform.log.read_text()
    assert code != 0
    assert output.strip().splitlines()[-1].startswith("Error: cannot reach the database at")
    # The next command finds the run whose process is gone, fails it and frees its slot.
    platform.cli("materialize")
    platform.assert_nothing_stuck()
    platform.assert_converged()


@pytest.mark.parametrize("victim", ["cli", "step", "worker"])
def test_kill_9_leaves_nothing_behind_and_a_rerun_converges(platform, victim):
    cli = platform.start_materialize()
    step, workers = step_and_workers(cli)
    platform.wait_for_rows("market_data", cli)
    target = {"cli": psutil.Process(cli.pid), "step": step, "worker": workers[0]}[victim]
    target.send_signal(signal.SIGKILL)
    code = cli.wait(240)
    assert_all_exit(cli)
    if victim == "worker":
        # The symbol fails as crashed, the step's RetryPolicy runs it again: green.
        assert code == 0, platform.log.read_text()[-5000:]
    platform.cli("materialize")
    platform.assert_nothing_stuck()
    platform.assert_converged()


def test_sigterm_stops_the_command_promptly_and_starts_no_further_run(platform):
    cli = platform.start_materialize()
    platform.wait_for_rows("market_data", cli)
    cli.send_signal(signal.SIGTERM)
    code = cli.wait(60)
    assert_all_exit(cli)
    output = platform.log.read_text()
    assert code == 130, output[-3000:]
    assert "no further run started" in output
    assert platform.scalar("SELECT count(*) FROM dagster.runs") == 1  # features never began
    assert platform.scalar("SELECT count(*) FROM public.feature_engineered_data") == 0
    platform.cli("materialize")
    platform.assert_nothing_stuck()
    platform.assert_converged()
