"""Steps on two worker hosts through Celery: hosts the test builds (network namespaces on a
bridge), with a PostgreSQL, a RabbitMQ and a Yahoo-compatible server of its own bound to the
bridge. The hosts run `mltrading worker`; the control host (this namespace) launches runs
with `mltrading materialize`, as a user would."""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets_tests.conftest import run_cli
from mltrading_assets_tests.fake_yahoo import FakeYahoo
from mltrading_assets_tests.netns_hosts import NetnsHosts, OwnRabbitMQ
from mltrading_assets_tests.own_postgres import OwnPostgres
from mltrading_assets_tests.test_yahoo import after_close

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("rabbitmq-server"),
    reason="needs root, iproute2 and RabbitMQ to build its hosts",
)

SLOTS = 5


@dataclass
class Cluster:
    hosts: NetnsHosts
    yahoo: FakeYahoo
    engine: sa.Engine
    env: dict[str, str]
    folder: Path
    workers: list[subprocess.Popen]

    def start_worker(self, index: int) -> None:
        name = f"host{index + 1}"
        env = {
            **self.env,
            "MLTRADING_HOME": str(self.folder / name),
            "MLTRADING_YFINANCE_CACHE_DIR": str(self.folder / name / "yfinance"),
        }
        command = [sys.executable, "-m", "mltrading_assets.cli", "worker", "--name", name]
        self.workers[index] = self.hosts.popen(index, command, env, self.folder / f"{name}.log")

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            doctor = run_cli(self.env, "doctor", check=False).stdout
            if doctor.count("worker mltrading1@host") == count or time.monotonic() > deadline:
                return doctor
            time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    with NetnsHosts(2) as hosts:
        postgres = OwnPostgres(host=hosts.gateway)
        broker = OwnRabbitMQ(hosts.gateway)
        yahoo = FakeYahoo(now=after_close(), latency_s=0.2, address=hosts.gateway)
        cluster = None
        try:
            postgres.start()
            url = postgres.create_database("cluster")
            broker.start()
            yahoo.start()
            env = {
                **{
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("DAGSTER", "MLTRADING"))
                },
                **yahoo.env(),
                "MLTRADING_DATABASE_URL": url,
                "MLTRADING_CELERY_BROKER": broker.url,
                "MLTRADING_SOURCE": "yahoo",
                "MLTRADING_MAX_CONCURRENT_REQUESTS": str(SLOTS),
                "MLTRADING_SYMBOLS_PER_RUN": "40",
                "MLTRADING_HOME": str(folder / "control"),
                "MLTRADING_HOST_NAME": "control",
                "MLTRADING_YFINANCE_CACHE_DIR": str(folder / "control" / "yfinance"),
            }
            run_cli(env, "db", "init")
            engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
            cluster = Cluster(hosts, yahoo, engine, env, folder, [None, None])
            for index in range(2):
                cluster.start_worker(index)
            doctor = cluster.wait_for_workers(2)
            assert "worker mltrading1@host1" in doctor and "worker mltrading1@host2" in doctor, (
                doctor
            )
            yield cluster
        finally:
            if cluster is not None:
                cluster.engine.dispose()
            yahoo.stop()
            broker.close()
            postgres.close()


def _symbols(yahoo: FakeYahoo, prefix: str, count: int) -> list[str]:
    """Symbols whose bars the server has built already: building them takes it seconds of
    CPU, and a request the client gave up on (its timeout) still counts as in flight there."""
    symbols = [f"{prefix}{i:03d}" for i in range(count)]
    for symbol in symbols:
        yahoo.bars(symbol)
    return symbols


def _bars(conn: sa.Connection, like: str) -> tuple[int, int, int]:
    """Symbols with bars, bars, and distinct (symbol, bar) pairs among ``like`` symbols."""
    return conn.execute(
        sa.text(
            "SELECT count(DISTINCT symbol), count(*), count(DISTINCT (symbol, timestamp)) "
            "FROM market_data WHERE symbol LIKE :like"
        ),
        {"like": like},
    ).one()


def _slots_held(conn: sa.Connection) -> int:
    return conn.execute(
        sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    ).scalar_one()


def _hosts_of_runs(engine: sa.Engine, key: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT run_id, value FROM dagster.run_tags WHERE key = :key"), {"key": key}
        ).all()
    return dict(rows)


def test_a_refresh_spreads_over_both_hosts_and_yahoo_sees_at_most_5_per_host(cluster):
    symbols = _symbols(cluster.yahoo, "SPR", 200)
    done = run_cli(cluster.env, "materialize", "--symbols", ",".join(symbols))
    assert "200 symbols in" in done.stdout, done.stdout

    # Both hosts did bar steps and feature steps; the runs name them.
    bar_hosts = _hosts_of_runs(cluster.engine, "mltrading/market_data.host")
    feature_hosts = _hosts_of_runs(cluster.engine, "mltrading/feature_engineered_data.host")
    assert len(bar_hosts) == len(feature_hosts) == 5
    assert set(bar_hosts.values()) | set(feature_hosts.values()) == {"host1", "host2"}
    with cluster.engine.connect() as conn:
        orchestrators = conn.execute(
            sa.text("SELECT DISTINCT value FROM dagster.run_tags WHERE key = 'mltrading/host'")
        ).scalars()
        assert list(orchestrators) == ["control"]
        # Every symbol's bars and features are in, each bar once.
        with_bars, bars, distinct_bars = _bars(conn, "SPR%")
        with_features = conn.execute(
            sa.text("SELECT count(DISTINCT symbol) FROM feature_engineered_data")
        ).scalar()
    assert with_bars == with_features == 200 and bars == distinct_bars

    # Yahoo's limit held per client address, and each host's address was used.
    peaks = cluster.yahoo.stats.peak_by_address
    assert set(peaks) == set(cluster.hosts.addresses), peaks
    assert all(1 <= peak <= SLOTS for peak in peaks.values()), peaks
    # No request slot is left held.
    with cluster.engine.connect() as conn:
        assert _slots_held(conn) == 0


def test_a_host_killed_mid_step_hands_its_step_to_the_other_host(cluster):
    symbols = _symbols(cluster.yahoo, "KIL", 80)
    before = dict(cluster.yahoo.stats.chart_requests)
    launch = subprocess.Popen(
        [sys.executable, "-m", "mltrading_assets.cli", "materialize", "--asset", "market_data",
         "--runs-at-once", "1", "--symbols", ",".join(symbols)],
        cwd=PROJECT_ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    # Wait until one host is fetching this run's symbols, then cut its power.
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        busy = {
            address: n for address, n in cluster.yahoo.stats.in_flight_by_address.items() if n > 0
        }
        fetched = sum(cluster.yahoo.stats.chart_requests[s] for s in symbols) - sum(
            before.get(s, 0) for s in symbols
        )
        if busy and fetched >= 10:
            victim = cluster.hosts.addresses.index(next(iter(busy)))
        time.sleep(0.05)
    assert victim is not None, "no host started fetching"
    assert cluster.hosts.kill_all(victim)
    out, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, out

    # The step ran again on the survivor, which finished every symbol; each bar is there once.
    survivor = f"host{2 - victim}"
    run_hosts = _hosts_of_runs(cluster.engine, "mltrading/market_data.host")
    with cluster.engine.connect() as conn:
        run_id = conn.execute(
            sa.text(
                "SELECT run_id FROM dagster.runs WHERE run_body LIKE :first "
                "ORDER BY create_timestamp DESC LIMIT 1"
            ),
            {"first": "%KIL000%"},
        ).scalar()
        with_bars, bars, distinct_bars = _bars(conn, "KIL%")
        held = _slots_held(conn)
    assert run_hosts[run_id] == survivor
    assert with_bars == 80 and bars == distinct_bars
    assert held == 0

    # The killed host comes back and takes work again.
    cluster.start_worker(victim)
    assert cluster.wait_for_workers(2).count("worker mltrading1@host") == 2
