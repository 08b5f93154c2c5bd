"""A backup taken by the platform restores into a working platform: the same bars, the same
features, the same champion model, and the next refresh runs on the restored copy."""

import os
import shutil
import time
import uuid

import pytest
import sqlalchemy as sa

from mltrading_assets.db.embedded import ensure_database
from mltrading_assets_tests.conftest import run_cli

AS_OF = "2026-11-20T21:00:00Z"
LATER = "2026-11-23T17:10:00Z"
SYMBOLS = ["AAA", "BBB", "CCC"]
# Every value of every row, in key order: equal digests mean equal tables.
DIGEST = (
    "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY symbol, timestamp)) "
    "FROM (SELECT * FROM public.{table}) AS t"
)


def new_database(server_url: str) -> str:
    name = f"backup_{uuid.uuid4().hex[:8]}"
    ensure_database(server_url, name)
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def digest(url: str, table: str) -> tuple:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            columns = [
                c
                for c in sa.inspect(conn).get_columns(table, schema="public")
                if c["name"] not in ("created_at", "updated_at")
            ]
            names = ", ".join(f'"{c["name"]}"' for c in columns)
            sql = DIGEST.format(table=table).replace("SELECT *", f"SELECT {names}")
            return tuple(conn.exec_driver_sql(sql).one())
    finally:
        engine.dispose()


def platform(url: str, home) -> dict:
    env = {
        **os.environ,
        "MLTRADING_DATABASE_URL": url,
        "MLTRADING_HOME": str(home),
        "MLTRADING_SYNTHETIC_AS_OF": AS_OF,
    }
    env.pop("DAGSTER_HOME", None)  # the CLI makes its own under MLTRADING_HOME
    env.pop("MLTRADING_FAULT_INJECTION", None)
    return env


@pytest.mark.usefixtures("database_url")
def test_a_backup_restores_into_a_working_platform(server_url, tmp_path):
    original = platform(new_database(server_url), tmp_path / "home")
    run_cli(original, "db", "init")
    run_cli(original, "symbols", "add", *SYMBOLS)
    run_cli(original, "materialize")
    # Synthetic bars are a random walk: the gate refuses the model, so it is promoted by hand.
    assert "candidate: version 1" in run_cli(original, "models", "train", check=False).stdout
    run_cli(original, "models", "promote", "1", "--reason", "the backup test needs a champion")

    backup = tmp_path / "backup"
    taken = run_cli(original, "db", "backup", str(backup))
    for schema in ("public", "dagster", "mlflow"):
        assert f"{schema}: {backup / (schema + '.dump')}" in taken.stdout
    assert (backup / "manifest.json").exists()
    # The machine is lost: the model files with it. The restore brings them back.
    shutil.rmtree(tmp_path / "home" / "models" / "mlflow-artifacts")

    not_empty = run_cli(original, "db", "restore", str(backup), check=False)
    assert not_empty.returncode == 1 and "restore into an empty database" in not_empty.stderr

    restored = platform(new_database(server_url), tmp_path / "new-home")
    run_cli(restored, "db", "restore", str(backup))
    for table in ("market_data", "feature_engineered_data", "model_predictions"):
        assert digest(restored["MLTRADING_DATABASE_URL"], table) == digest(
            original["MLTRADING_DATABASE_URL"], table
        ), table
    champion = run_cli(restored, "models", "champion")
    assert "champion: version 1" in champion.stdout

    # The next hour on the restored copy: Dagster's partitions and history are there, the
    # refresh adds Monday's bars, and the restored champion predicts them.
    restored["MLTRADING_SYNTHETIC_AS_OF"] = LATER
    refreshed = run_cli(restored, "materialize")
    assert "predictions: 3 symbols" in refreshed.stdout, refreshed.stdout
    engine = sa.create_engine(restored["MLTRADING_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql(
                "SELECT DISTINCT model_version FROM public.model_predictions "
                "WHERE timestamp > '2026-11-21'"
            ).scalars()
            assert list(versions) == ["1"]
    finally:
        engine.dispose()


def test_the_nightly_backup_keeps_the_newest(instance, db, tmp_path):
    from mltrading_assets.definitions import defs

    job = defs.get_job_def("backup_job")
    config = {"ops": {"back_up_database": {"config": {"folder": str(tmp_path), "keep": 1}}}}
    for _ in range(2):
        assert job.execute_in_process(instance=instance, run_config=config).success
        time.sleep(1.1)  # one backup folder per second
    [kept] = list(tmp_path.iterdir())
    assert {p.name for p in kept.iterdir()} >= {"manifest.json", "public.dump", "dagster.dump"}
