"""The `mltrading` command as a user types it."""

import json

import pytest
from click.testing import CliRunner

from mltrading_assets.cli import main
from mltrading_assets.definitions import defs
from mltrading_assets_tests.conftest import table_count


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, input=input)


def test_definitions_load_with_every_asset_and_job():
    assert {a.key.to_user_string() for a in defs.resolve_all_asset_specs()} == {
        "market_data",
        "feature_engineered_data",
        "training_dataset",
        "candidate_model",
        "model_evaluation",
        "champion_model",
        "model_predictions",
    }
    for job in ("market_data_job", "features_job", "model_training_job", "model_predictions_job"):
        assert defs.resolve_job_def(job)


def test_help_lists_the_commands():
    result = invoke("--help")
    for command in ("demo", "materialize", "symbols", "db", "doctor", "ui"):
        assert command in result.output


def test_dagsters_beta_and_preview_warnings_stay_out_of_the_terminal():
    """Every command silences them through the module Dagster defines them in (loading all
    of Dagster for that delayed each command's start by a second)."""
    import warnings

    import dagster as dg

    from mltrading_assets.cli import environment

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        environment.quiet_dagster_warnings()
        warnings.warn("a beta parameter", dg.BetaWarning, stacklevel=1)
        warnings.warn("a preview API", dg.PreviewWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_symbols_add_registers_partitions_and_stock_info(instance, db):
    result = invoke("symbols", "add", "aapl", "BRK-B,^GSPC")
    assert result.exit_code == 0, result.output
    assert set(instance.get_dynamic_partitions("symbols")) == {"AAPL", "BRK-B", "^GSPC"}
    assert table_count(db, "stock_info", active=True) == 3
    invoke("symbols", "remove", "BRK-B")
    assert table_count(db, "stock_info", active=True) == 2
    assert table_count(db, "stock_info") == 3  # deactivated, not deleted


def test_a_universe_is_registered_from_standard_input_a_line_per_batch(instance, db):
    universe = [f"U{n:04d}" for n in range(2500)]
    text = "symbol\n# the test universe\n" + "\n".join(universe[:2000]) + "\n"
    text += ",".join(universe[2000:]) + "\n"
    result = invoke("symbols", "add", "--file", "-", input=text)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [
        "batch 1/3: 1000 symbols (U0000 … U0999), 1000 new",
        "batch 2/3: 1000 symbols (U1000 … U1999), 1000 new",
        "batch 3/3: 500 symbols (U2000 … U2499), 500 new",
    ]
    assert lines[3].startswith("added 2500 symbol(s): U0000 U0001")
    assert len(result.output) < 1000  # not every name, let alone twice
    assert sorted(instance.get_dynamic_partitions("symbols")) == universe
    assert table_count(db, "stock_info", active=True) == 2500


def test_a_universe_file_with_bad_lines_names_them_and_adds_nothing(instance, db, tmp_path):
    path = tmp_path / "universe.txt"
    path.write_text("AAPL\nBRK B\nMSFT\n..\n")
    result = CliRunner().invoke(main, ["symbols", "add", "--file", str(path)])
    assert result.exit_code == 1
    assert f"{path}: nothing added" in result.output
    assert "line 2: invalid symbol 'BRK B'" in result.output
    assert "line 4: invalid symbol '..'" in result.output
    assert table_count(db, "stock_info") == 0
    assert instance.get_dynamic_partitions("symbols") == []


def test_invalid_symbol_is_refused_before_anything_is_written(instance, db):
    result = CliRunner().invoke(main, ["symbols", "add", "AAPL", "X');DROP"])
    assert result.exit_code == 2
    assert 'invalid symbol "X\');DROP"' in result.output
    assert table_count(db, "stock_info") == 0
    assert instance.get_dynamic_partitions("symbols") == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["symbols", "add", ""], "no symbol given"),
        (["symbols", "add", "   "], "no symbol given"),
        (["symbols", "add", ",,"], "no symbol given"),
        (["materialize", "--symbols", ""], "no symbol given"),
        (["symbols", "add", "BRK B"], "invalid symbol 'BRK B'"),
        (["symbols", "add", ".."], "invalid symbol '..'"),
        (["symbols", "add", "="], "invalid symbol '='"),
        (["symbols", "add", "^"], "invalid symbol '^'"),
        (["symbols", "add", "-"], "invalid symbol '-'"),
    ],
)
def test_empty_or_malformed_selections_are_refused(instance, db, args, words):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert table_count(db, "stock_info") == 0
    assert instance.get_dynamic_partitions("symbols") == []


def test_removing_an_unknown_symbol_says_so(instance, db):
    invoke("symbols", "add", "AAPL")
    result = CliRunner().invoke(main, ["symbols", "remove", "AAPL", "ZZZZ"])
    assert result.exit_code == 1
    assert "deactivated 1 symbol(s)" in result.output
    assert "unknown symbol(s), never added: ZZZZ" in result.output


def test_doctor_reports_which_tables_live_in_which_schema(instance, db):
    result = invoke("doctor", "--json")
    report = json.loads(result.output)
    assert result.exit_code == 0, report["problems"]
    assert {"market_data", "feature_engineered_data", "stock_info"} <= set(
        report["tables"]["public"]
    )
    assert {"runs", "event_logs"} <= set(report["tables"]["dagster"])
    assert not {"runs", "event_logs"} & set(report["tables"]["public"])
    # A server without autovacuum (CI's is one) is named: the hourly tables never get
    # statistics there, and the UI's check-status queries slow down by orders of magnitude.
    with db.connect() as conn:
        autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar_one()
    assert report["server"] == {"autovacuum": autovacuum}
    warned = any("autovacuum is off" in warning for warning in report["warnings"])
    assert warned == (autovacuum == "off")


def test_doctor_fails_when_the_dagster_schema_is_missing(database_url, server_url, monkeypatch):
    import sqlalchemy as sa

    from mltrading_assets.db.embedded import ensure_database

    # A separate database, so the shared one keeps its Dagster tables.
    ensure_database(server_url, "mltrading_doctor_test")
    url = sa.make_url(server_url).set(database="mltrading_doctor_test")
    url = url.render_as_string(hide_password=False)
    monkeypatch.setenv("MLTRADING_DATABASE_URL", url)
    from mltrading_assets.cli import doctor

    report = doctor.check(url)
    assert not report.ok
    assert any("schema 'dagster' is missing" in p for p in report.problems)
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql('DROP DATABASE "mltrading_doctor_test" WITH (FORCE)')
    engine.dispose()


def test_stats_report_runs_durations_slowest_symbols_and_rows(instance, db, inject_faults):
    from mltrading_assets.lib.launching import materialize
    from mltrading_assets.lib.partitions import register_partitions
    from mltrading_assets_tests.test_dagster_runs import run_config

    register_partitions(instance, ["AAPL", "FAIL"])
    materialize(instance, "market_data", ["AAPL"], run_config=run_config())
    inject_faults("FAIL=raise")
    materialize(instance, "market_data", ["FAIL"], run_config=run_config())
    result = invoke("stats", "--json")
    stats = json.loads(result.output)
    assert stats["last_day"]["runs"] == 2
    assert stats["last_day"]["by_status"] == {"SUCCESS": 1, "FAILURE": 1}
    assert stats["last_day"]["success_rate"] == 0.5
    assert stats["last_day"]["median_duration_s"] > 0
    assert stats["slowest_symbols_last_day"][0]["symbol"] == "AAPL"
    assert stats["rows"]["market_data"] == table_count(db, "market_data") > 1700


def test_a_database_that_is_down_is_one_clear_line(monkeypatch, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLTRADING_DATABASE_URL", f"postgresql://app:s3cret@127.0.0.1:{port}/x")
    for args in (["symbols", "list"], ["symbols", "add", "AAPL"], ["materialize"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "cannot reach the database at postgresql://app:***@127.0.0.1" in result.output
        assert "Traceback" not in result.output and "s3cret" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_db_stop_stops_the_embedded_server_a_killed_process_was_using(tmp_path):
    """A process that used the embedded server and was killed (`kill -9` of `mltrading
    ui`) must not keep `mltrading db stop` from stopping it."""
    import os
    import subprocess
    import sys

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "MLTRADING_DATABASE_URL"}
    env["MLTRADING_HOME"] = str(tmp_path)
    script = (
        "import os, signal\n"
        "from mltrading_assets.db.embedded import start_embedded_postgres\n"
        "start_embedded_postgres()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    pid_file = tmp_path / "pgdata" / "postmaster.pid"
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    done = subprocess.run(
        [sys.executable, "-m", "mltrading_assets.cli", "db", "stop"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.strip() == "stopped"
    postmaster.wait(30)
    assert not pid_file.exists()
