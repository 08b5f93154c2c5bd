"""Steps on two worker hosts through Celery: hosts the test builds (network namespaces on a
bridge), with a PostgreSQL, a RabbitMQ and a Yahoo-compatible server of its own bound to the
bridge. The hosts run `mltrading worker`; the control host (this namespace) launches runs
with `mltrading materialize`, as a user would."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets_tests.conftest import free_port, run_cli
from mltrading_assets_tests.fake_yahoo import FakeYahoo
from mltrading_assets_tests.netns_hosts import Cluster
from mltrading_assets_tests.netns_hosts import cluster as build_cluster

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("rabbitmq-server"),
    reason="needs root, iproute2 and RabbitMQ to build its hosts",
)

SLOTS = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    settings = {"MLTRADING_MAX_CONCURRENT_REQUESTS": str(SLOTS), "MLTRADING_SYMBOLS_PER_RUN": "40"}
    with build_cluster(tmp_path_factory.mktemp("cluster"), 2, env=settings) as built:
        yield built


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
        # Each step's result was deleted from the result store once its run had read it.
        results_left = conn.execute(
            sa.text("SELECT task_id, status FROM dagster.celery_taskmeta")
        ).all()
    assert with_bars == with_features == 200 and bars == distinct_bars
    assert results_left == []

    # Yahoo's limit held per client address, and each host's address was used.
    peaks = cluster.yahoo.stats.peak_by_address
    assert set(peaks) == set(cluster.hosts.addresses), peaks
    assert all(1 <= peak <= SLOTS for peak in peaks.values()), peaks
    # No request slot is left held.
    assert _slots_freed_by(cluster.engine, time.monotonic()) == ""
    # Between steps a worker host holds no connection to Dagster's storage (each of the 5
    # steps a host ran used to leave one open for good).
    assert _dagster_connections_of_hosts(cluster, time.monotonic() + 10) == []
    # Each host's log is lines a person can read: a step's success says how long it took,
    # not the kilobyte of serialized events Celery would print with it.
    for host in ("host1", "host2"):
        lines = (cluster.folder / f"{host}.log").read_text().splitlines()
        assert [line for line in lines if len(line) > 300] == []
        assert any("succeeded in" in line for line in lines)


_LAUNCHED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_launch_outlives_its_test():
    """A test that fails while its command still runs must not leave it running."""
    yield
    while _LAUNCHED:
        launch = _LAUNCHED.pop()
        if launch.poll() is None:
            launch.kill()
            launch.communicate()


def _launch_while_fetching(cluster: Cluster, symbols: list[str]) -> tuple[subprocess.Popen, int]:
    """`mltrading materialize` of the bars of ``symbols`` (one run), returned once a host
    has fetched a few of them and has requests in flight; with that host's index."""
    before = sum(cluster.yahoo.stats.chart_requests[s] for s in symbols)
    launch = subprocess.Popen(
        [sys.executable, "-m", "mltrading_assets.cli", "materialize", "--asset", "market_data",
         "--runs-at-once", "1", "--symbols", ",".join(symbols)],
        cwd=PROJECT_ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    _LAUNCHED.append(launch)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fetched = sum(cluster.yahoo.stats.chart_requests[s] for s in symbols) - before
        busy = [a for a, n in cluster.yahoo.stats.in_flight_by_address.items() if n > 0]
        if busy and fetched >= 10:
            return launch, cluster.hosts.addresses.index(busy[0])
        time.sleep(0.05)
    launch.kill()
    raise AssertionError(f"no host started fetching: {launch.communicate()[0][-3000:]}")


def _latest_bars_run(conn: sa.Connection, first: str) -> tuple[str, str]:
    return conn.execute(
        sa.text(
            "SELECT r.run_id, r.status FROM dagster.runs r JOIN dagster.run_tags t "
            "ON t.run_id = r.run_id AND t.key = 'dagster/asset_partition_range_start' "
            "WHERE t.value = :first AND r.pipeline_name = 'market_data_job' "
            "ORDER BY r.create_timestamp DESC LIMIT 1"
        ),
        {"first": first},
    ).one()


def _dagster_connections_of_hosts(cluster: Cluster, deadline: float) -> list[str]:
    """[] once no worker host has a connection to Dagster's storage (waiting until
    ``deadline`` at most: a step's task closes it just after handing back its result); else
    each one's address and name."""
    while True:
        with cluster.engine.connect() as conn:
            held = (
                conn.execute(
                    sa.text(
                        "SELECT host(client_addr) || ' ' || application_name FROM pg_stat_activity "
                        "WHERE host(client_addr) = ANY(:hosts) AND application_name LIKE 'dagster%'"
                    ),
                    {"hosts": cluster.hosts.addresses},
                )
                .scalars()
                .all()
            )
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.5)


def _slots_freed_by(engine: sa.Engine, deadline: float) -> str:
    """'' once no request slot is held, waiting until ``deadline`` (monotonic) at most; else
    who still holds one."""
    while True:
        with engine.connect() as conn:
            holders = conn.execute(
                sa.text(
                    "SELECT a.application_name, a.client_addr, a.state FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
                )
            ).all()
        if not holders or time.monotonic() > deadline:
            return "; ".join(map(str, holders))
        time.sleep(0.5)


def _assert_the_survivor_did_the_step(cluster: Cluster, symbols: list[str], victim: int) -> None:
    """The run succeeded on the other host: every symbol's bars once."""
    survivor = f"host{2 - victim}"
    with cluster.engine.connect() as conn:
        run_id, status = _latest_bars_run(conn, symbols[0])
        with_bars, bars, distinct_bars = _bars(conn, symbols[0][:3] + "%")
    assert status == "SUCCESS"
    assert _hosts_of_runs(cluster.engine, "mltrading/market_data.host")[run_id] == survivor
    assert with_bars == len(symbols) and bars == distinct_bars


def _bring_back(cluster: Cluster, victim: int) -> None:
    cluster.hosts.kill_all(victim)
    cluster.hosts.cut(victim, connected=True)
    cluster.start_worker(victim)
    assert cluster.wait_for_workers(2).count("worker mltrading@host") == 2


def test_a_host_killed_mid_step_hands_its_step_to_the_other_host(cluster):
    symbols = _symbols(cluster.yahoo, "KIL", 80)
    launch, victim = _launch_while_fetching(cluster, symbols)
    try:
        assert cluster.hosts.kill_all(victim)
        out, _ = launch.communicate(timeout=300)
        assert launch.returncode == 0, out
        _assert_the_survivor_did_the_step(cluster, symbols, victim)
        # The killed host's sessions ended with its processes; their slots went with them.
        assert _slots_freed_by(cluster.engine, time.monotonic() + 10) == ""
    finally:
        _bring_back(cluster, victim)


def test_a_host_whose_link_is_cut_mid_step_hands_its_step_to_the_other_host(cluster):
    """Its database sessions look alive to the server until TCP gives up on them: the slots
    they hold go within the keepalive bound, not TCP's default two hours."""
    symbols = _symbols(cluster.yahoo, "CUT", 80)
    launch, victim = _launch_while_fetching(cluster, symbols)
    try:
        cluster.hosts.cut(victim)
        cut_at = time.monotonic()
        out, _ = launch.communicate(timeout=300)
        took = time.monotonic() - cut_at
        assert launch.returncode == 0, out
        _assert_the_survivor_did_the_step(cluster, symbols, victim)
        print(f"cut link: the run ended {took:.0f} s after the cut")
        # ~25 s of keepalives (or unacknowledged sends), with room for a slow machine.
        assert _slots_freed_by(cluster.engine, cut_at + 60) == ""
    finally:
        _bring_back(cluster, victim)


def test_a_run_terminated_mid_step_stops_its_step_on_the_host_and_a_rerun_converges(cluster):
    symbols = _symbols(cluster.yahoo, "TRM", 80)
    cluster.yahoo.latency_s = 1.0
    # What the UI's Terminate does first: the run is marked CANCELING. Dagster is imported
    # before the run starts: on a slow machine the import outlasted the rest of the step.
    script = (
        "import dagster as dg, sys; i = dg.DagsterInstance.get(); run_id = input(); "
        "i.report_run_canceling(i.get_run_by_id(run_id))"
    )
    control = {**cluster.env, "DAGSTER_HOME": str(cluster.folder / "control" / "dagster_home")}
    canceling = subprocess.Popen(
        [sys.executable, "-c", script], env=control, stdin=subprocess.PIPE, text=True
    )
    try:
        launch, _ = _launch_while_fetching(cluster, symbols)
        with cluster.engine.connect() as conn:
            run_id, _ = _latest_bars_run(conn, symbols[0])
        canceling.communicate(run_id + "\n", timeout=60)
        assert canceling.returncode == 0
        out, _ = launch.communicate(timeout=60)
    finally:
        canceling.kill()
        cluster.yahoo.latency_s = 0.2
    fetched = sum(cluster.yahoo.stats.chart_requests[s] for s in symbols)
    time.sleep(3)
    # The step stopped: no further request, and not every symbol was fetched.
    assert sum(cluster.yahoo.stats.chart_requests[s] for s in symbols) == fetched
    with cluster.engine.connect() as conn:
        run_id, status = _latest_bars_run(conn, symbols[0])
        stopped_with = _bars(conn, "TRM%")[0]
        ended = (
            conn.execute(
                sa.text(
                    "SELECT dagster_event_type FROM dagster.event_logs WHERE run_id = :run AND "
                    "dagster_event_type IN ('STEP_FAILURE', 'STEP_UP_FOR_RETRY', 'STEP_SUCCESS')"
                ),
                {"run": run_id},
            )
            .scalars()
            .all()
        )
    assert _slots_freed_by(cluster.engine, time.monotonic()) == ""
    assert status == "CANCELED", out
    # The run ended once the host's step had: the step's own end is in its log (a revoke
    # must not end the run while the step still runs).
    assert len(ended) == 1, out
    # The command started no further range, and the terminated one stopped part-way.
    assert launch.returncode == 130 and "interrupted: run" in out, out
    assert stopped_with < 40
    # Launched again, every symbol's bars are there once.
    run_cli(cluster.env, "materialize", "--asset", "market_data", "--symbols", ",".join(symbols))
    with cluster.engine.connect() as conn:
        with_bars, bars, distinct_bars = _bars(conn, "TRM%")
    assert with_bars == len(symbols) and bars == distinct_bars


def test_a_broker_restart_mid_run_is_survived_by_the_run_in_flight(cluster):
    symbols = _symbols(cluster.yahoo, "BRK", 80)
    launch, _ = _launch_while_fetching(cluster, symbols)
    restarted_at = time.monotonic()
    cluster.broker.restart()
    out, _ = launch.communicate(timeout=300)
    took = time.monotonic() - restarted_at
    with cluster.engine.connect() as conn:
        run_id, status = _latest_bars_run(conn, symbols[0])
        with_bars, bars, distinct_bars = _bars(conn, "BRK%")
        steps = dict(
            conn.execute(
                sa.text(
                    "SELECT dagster_event_type, count(*) FROM dagster.event_logs "
                    "WHERE run_id = :run AND dagster_event_type LIKE 'STEP_%' GROUP BY 1"
                ),
                {"run": run_id},
            ).all()
        )
    print(f"broker restart: the command ended {took:.0f} s later, exit {launch.returncode}, "
          f"step events of the run in flight {steps}")  # fmt: skip
    # The step in flight was stopped and run again once (the broker delivered it again); the
    # range after it waited for the broker; both succeeded, every bar there once.
    assert launch.returncode == 0 and status == "SUCCESS", out
    assert steps.get("STEP_SUCCESS") == 1 and set(steps) <= {"STEP_START", "STEP_SUCCESS"}
    assert with_bars == len(symbols) and bars == distinct_bars
    assert _slots_freed_by(cluster.engine, time.monotonic()) == ""
    # The hosts are back on the broker.
    assert cluster.wait_for_workers(2).count("worker mltrading@host") == 2


def test_a_step_for_a_queue_nobody_serves_fails_the_run_at_once(cluster):
    env = {**cluster.env, "MLTRADING_QUEUE_FEATURES": "nobody"}
    started = time.monotonic()
    done = run_cli(env, "materialize", "--asset", "features", "--symbols", "SPR000", check=False)
    assert done.returncode == 1
    assert "no worker serves queue nobody" in done.stdout + done.stderr
    assert time.monotonic() - started < 60
    doctor = run_cli(env, "doctor", check=False)
    assert doctor.returncode == 1 and "PROBLEM: no worker serves queue nobody" in doctor.stdout


def test_the_daemons_runs_for_new_symbols_land_on_both_hosts(cluster):
    """The daemon's path: symbols added while `mltrading ui` runs are loaded by the universe
    sensor in ranged runs and followed by features, every step on a worker host."""
    symbols = _symbols(cluster.yahoo, "NEW", 100)
    log = cluster.folder / "ui.log"
    ui = subprocess.Popen(
        [sys.executable, "-m", "mltrading_assets.cli", "ui", "--port", str(free_port()),
         "--charts-port", str(free_port())],
        cwd=PROJECT_ROOT, env=cluster.env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        run_cli(cluster.env, "symbols", "add", *symbols)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with cluster.engine.connect() as conn:
                done = conn.execute(
                    sa.text(
                        "SELECT count(DISTINCT symbol) FROM feature_engineered_data "
                        "WHERE symbol LIKE 'NEW%'"
                    )
                ).scalar()
            if done == len(symbols):
                break
            assert ui.poll() is None, log.read_text()[-3000:]
            time.sleep(3)
        else:
            raise AssertionError(f"{done} of 100 loaded in time\n{log.read_text()[-3000:]}")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(60)
    with cluster.engine.connect() as conn:
        # The sensor's runs for the new symbols, and the features runs that followed them.
        hosts = conn.execute(
            sa.text(
                "SELECT DISTINCT t.value FROM dagster.run_tags t JOIN dagster.run_tags n "
                "ON n.run_id = t.run_id AND n.key IN ('mltrading/new_symbols', "
                "'mltrading/after_run') WHERE t.key LIKE 'mltrading/%.host'"
            )
        ).scalars()
        assert set(hosts) == {"host1", "host2"}
        with_bars, bars, distinct_bars = _bars(conn, "NEW%")
    assert with_bars == 100 and bars == distinct_bars


def test_the_orchestrator_looks_at_its_steps_four_times_a_second():
    # A run ends a quarter of a second after its last step, not up to two: the loop of
    # dagster-celery (an internal module) sleeps its module's TICK_SECONDS between looks.
    import inspect

    from dagster_celery import core_execution_loop

    from mltrading_assets.lib import distributed

    assert core_execution_loop.TICK_SECONDS == distributed.STEP_POLL_SECONDS == 0.25
    loop = inspect.getsource(core_execution_loop.core_celery_execution_loop)
    assert "time.sleep(TICK_SECONDS)" in loop
