"""Real PostgreSQL for every test session: MLTRADING_TEST_DATABASE_URL's server if set, else
an embedded one. Each session works in its own fresh database, dropped at the end."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from mltrading_assets.db.embedded import ensure_database
from mltrading_assets.db.engine import create_app_engine
from mltrading_assets.db.migrate import apply_schema
from mltrading_assets.db.tables import APP_TABLES
from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets.workers import fault_injection

FIXTURES = Path(__file__).parent / "fixtures"

# Faults on purpose (workers/fault_injection.py) for runs executed in this process: the
# executor's fork server keeps the environment it started with, so the variable is set
# before any run, once, to a file that each test writes its faults into (`inject_faults`).
# A step process that imports this module (a job defined in a test module) keeps the file.
if fault_injection.ENVIRONMENT_VARIABLE not in os.environ:
    os.environ[fault_injection.ENVIRONMENT_VARIABLE] = str(
        Path(tempfile.mkdtemp(prefix="mltrading-faults-")) / "faults"
    )
FAULTS_FILE = Path(os.environ[fault_injection.ENVIRONMENT_VARIABLE])

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def load_yahoo_csv(name: str) -> pd.DataFrame:
    """A fixture of real Yahoo bars in yfinance's CSV layout, as a UTC-indexed bar frame."""
    raw = pd.read_csv(FIXTURES / name)
    stamp_column = "Datetime" if "Datetime" in raw.columns else "Date"
    index = pd.to_datetime(raw.pop(stamp_column), utc=True)
    bars = raw.rename(columns=lambda c: c.lower().replace(" ", "_"))
    bars.index = pd.DatetimeIndex(index, name="timestamp")
    return bars[["open", "high", "low", "close", "adj_close", "volume"]].astype(float)


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("MLTRADING_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from mltrading_assets.db.embedded import pgserver_module

    # Not under pytest's tmp dir: pytest resets /tmp/pytest-of-<user> to mode 700 when a
    # session starts, which locks the server's own user out of its data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="mltrading-test-pg-")) / "data"
    server = pgserver_module().get_server(data_dir, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(server_url) -> str:
    name = f"mltrading_test_{uuid.uuid4().hex[:10]}"
    ensure_database(server_url, name)
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    # Dagster's dagster.yaml and every step process read the database from here.
    os.environ["MLTRADING_DATABASE_URL"] = url
    yield url
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url) -> sa.Engine:
    engine = create_app_engine(database_url, pool_size=2, application_name="mltrading-tests")
    apply_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine) -> sa.Engine:
    """The app database with empty tables."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join('public.' + t for t in APP_TABLES)} CASCADE")
    return engine


@pytest.fixture(scope="session")
def dagster_home(tmp_path_factory, database_url) -> Path:
    """A DAGSTER_HOME holding the repository's own dagster.yaml (Postgres storage, schema
    `dagster`), pointed at the test database."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def session_instance(dagster_home) -> dg.DagsterInstance:
    # One instance per session: Dagster keeps process-wide references to the current one.
    with dg.DagsterInstance.get() as instance:
        from mltrading_assets.definitions import defs

        # Resolve the repository while this instance is current: Dagster caches it, and a
        # later first resolution would look up whichever (possibly collected) instance was
        # created last, e.g. an ephemeral one behind build_schedule_context.
        defs.get_repository_def()
        yield instance


@pytest.fixture
def instance(session_instance, db) -> dg.DagsterInstance:
    """A real Dagster instance on PostgreSQL, wiped, with no symbol partitions."""
    session_instance.wipe()
    # A daemon an earlier test ran must not look alive to this one.
    session_instance.wipe_daemon_heartbeats()
    for key in session_instance.get_dynamic_partitions("symbols"):
        session_instance.delete_dynamic_partition("symbols", key)
    return session_instance


def table_count(engine: sa.Engine, table: str, **where) -> int:
    clauses = " AND ".join(f"{k} = :{k}" for k in where) or "TRUE"
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM public.{table} WHERE {clauses}"), where
        ).scalar_one()


@pytest.fixture
def yahoo(monkeypatch):
    """The local Yahoo-compatible server, its clock 2 h after the newest closed session;
    yfinance in processes forked from here talks to it."""
    from mltrading_assets_tests.fake_yahoo import FakeYahoo
    from mltrading_assets_tests.test_yahoo import after_close

    server = FakeYahoo(now=after_close()).start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


@pytest.fixture
def spec(database_url, tmp_path, db):
    """What a worker needs to load 30 days of bars from the yahoo source."""
    from mltrading_assets_tests.test_yahoo import yahoo_spec

    return yahoo_spec(database_url, tmp_path)


def run_cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`mltrading ARGS` in a subprocess with ``env``; with ``check``, it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "mltrading_assets.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def success_sensor_context(
    instance: dg.DagsterInstance, run: dg.DagsterRun, sensor: dg.RunStatusSensorDefinition
) -> dg.RunStatusSensorContext:
    """What the daemon hands ``sensor`` once ``run`` has succeeded (or failed)."""
    success = next(
        e.dagster_event
        for e in instance.all_logs(run.run_id)
        if e.dagster_event
        and e.dagster_event.event_type_value in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE")
    )
    return dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_instance=instance, dagster_run=run, dagster_event=success
    )


@pytest.fixture
def inject_faults():
    """``inject_faults("B=raise,C=kill")``: those symbols fail on purpose in this test's runs."""
    yield FAULTS_FILE.write_text
    FAULTS_FILE.unlink(missing_ok=True)
