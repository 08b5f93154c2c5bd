"""Least privilege: `mltrading db init --roles` makes an app role that can touch only the app
tables and a Dagster role that can touch only schema `dagster`; the platform runs with them,
and neither password shows up in what it stores or prints."""

import os
import uuid

import pytest
import sqlalchemy as sa

from mltrading_assets.db.embedded import ensure_database
from mltrading_assets_tests.conftest import run_cli

APP_PASSWORD = "app-Secret-0f3c"
DAGSTER_PASSWORD = "dagster-Secret-9a1e"


def as_role(url: str, role: str, password: str) -> str:
    return (
        sa.make_url(url).set(username=role, password=password).render_as_string(hide_password=False)
    )


def denied(url: str, sql: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
        return False
    except sa.exc.ProgrammingError as exc:
        return "permission denied" in str(exc) or "must be owner" in str(exc)
    finally:
        engine.dispose()


@pytest.fixture
def roles_database(server_url, tmp_path):
    name = f"mltrading_roles_{uuid.uuid4().hex[:8]}"
    ensure_database(server_url, name)
    owner = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    env = {**os.environ, "MLTRADING_DATABASE_URL": owner, "MLTRADING_HOME": str(tmp_path)}
    env.pop("DAGSTER_HOME", None)
    yield owner, env
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def test_each_role_touches_only_its_own_schema_and_the_platform_runs_with_them(roles_database):
    owner, env = roles_database
    run_cli(env, "db", "init", "--roles")
    app = as_role(owner, "mltrading_app", APP_PASSWORD)
    dagster = as_role(owner, "mltrading_dagster", DAGSTER_PASSWORD)
    run_env = {
        **env,
        "MLTRADING_DATABASE_URL": app,
        "MLTRADING_DAGSTER_DATABASE_URL": dagster,
        "MLTRADING_SYNTHETIC_AS_OF": "2026-11-20T21:00:00Z",
    }
    printed = run_cli(run_env, "symbols", "add", "ROLEA,ROLEB")
    printed_run = run_cli(run_env, "materialize")
    assert "2 symbols in" in printed_run.stdout

    engine = sa.create_engine(owner)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(DISTINCT symbol) FROM feature_engineered_data")
        dagster_tables = conn.exec_driver_sql(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'dagster'"
        ).all()
        # Everything Dagster stores, as text: no password in runs, events, tags or config.
        stored = "".join(
            conn.exec_driver_sql(
                f"SELECT coalesce(string_agg(r::text, ''), '') FROM dagster.{table} r"
            ).scalar_one()
            for table, _ in dagster_tables
        )
    engine.dispose()
    assert {owner_ for _, owner_ in dagster_tables} == {"mltrading_dagster"}
    assert "ROLEA" in stored  # the scan does see the runs
    for secret in (APP_PASSWORD, DAGSTER_PASSWORD):
        assert secret not in stored
        for output in (printed, printed_run):
            assert secret not in output.stdout + output.stderr

    # The app role: app tables yes, Dagster's no; the Dagster role the other way round.
    assert not denied(app, "SELECT count(*) FROM public.market_data")
    assert denied(app, "SELECT count(*) FROM dagster.runs")
    assert denied(app, "CREATE TABLE dagster.intruder (x int)")
    assert denied(app, "DROP TABLE public.market_data")
    assert not denied(dagster, "SELECT count(*) FROM dagster.runs")
    assert denied(dagster, "SELECT count(*) FROM public.market_data")
    assert denied(dagster, "CREATE TABLE public.intruder (x int)")
