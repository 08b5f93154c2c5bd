"""The platform as the UI drives it: the Dagster daemon sees new rows in stock_info, turns
them into partitions, runs their history load, and the features run follows by itself."""

import contextlib
import os
import subprocess
import sys
import time

import dagster as dg
import psutil
import sqlalchemy as sa

from mltrading_assets.db.symbols import add_symbols
from mltrading_assets.lib.run_processes import PRELOAD_MODULE
from mltrading_assets.names import RunTags
from mltrading_assets.paths import PROJECT_ROOT

AS_OF = "2026-11-20T21:00:00Z"
NEW = ["NEWA", "NEWB", "NEWC"]


def loaded(db: sa.Engine) -> dict[str, tuple[int, int]]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT m.symbol, count(*), (SELECT count(*) FROM feature_engineered_data f "
                "WHERE f.symbol = m.symbol) FROM market_data m GROUP BY m.symbol"
            )
        ).all()
    return {symbol: (bars, features) for symbol, bars, features in rows}


def run_forkservers(dev_pid: int) -> list[psutil.Process]:
    """The forkservers of the code servers under ``dagster dev`` that preload our code."""
    found = []
    for process in psutil.Process(dev_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "api grpc" in " ".join(process.cmdline()):
                found += [
                    child
                    for child in process.children()
                    if PRELOAD_MODULE in " ".join(child.cmdline())
                ]
    return found


def test_daemon_loads_new_symbols_and_features_follow(instance, db, tmp_path):
    with db.begin() as conn:
        add_symbols(conn, NEW)
    env = {
        **os.environ,
        "MLTRADING_SOURCE": "synthetic",
        "MLTRADING_SYNTHETIC_AS_OF": AS_OF,
        "MLTRADING_WORKERS": "2",
    }
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
            "-p",
            "3391",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        state = {}
        while time.monotonic() < deadline:
            state = loaded(db)
            if all(state.get(s, (0, 0))[1] > 0 and state[s][0] == state[s][1] for s in NEW):
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(2)
        else:
            raise AssertionError(
                f"not loaded in time: {state}\n" + (tmp_path / "daemon.log").read_text()[-3000:]
            )
        # The code server started those runs from a forkserver that preloads the code (it
        # starts with the first run), not as fresh interpreters.
        assert run_forkservers(daemon.pid), "the code server spawned its runs"
    finally:
        daemon.terminate()
        daemon.wait(30)
        log.close()

    assert set(instance.get_dynamic_partitions("symbols")) == set(NEW)
    history = instance.get_runs(filters=dg.RunsFilter(tags={RunTags.NEW_SYMBOLS: "true"}))
    assert len(history) == 1  # one batched run for the three symbols, not three
    assert history[0].tags["dagster/asset_partition_range_start"] == "NEWA"
    assert history[0].tags["dagster/asset_partition_range_end"] == "NEWC"
    # The step named the run worker that orchestrated it, so a killed one is found dead.
    assert history[0].tags[RunTags.PID] not in {str(os.getpid()), str(daemon.pid)}
    followers = instance.get_runs(
        filters=dg.RunsFilter(tags={RunTags.FEATURES_AFTER: history[0].run_id})
    )
    assert [run.job_name for run in followers] == ["features_job"]
    # The terminal shows each run's INFO summaries, not a DEBUG line per symbol and event
    # (those stay in the run's log in the UI).
    printed = (tmp_path / "daemon.log").read_text()
    assert "features_job" in printed and "3/3 symbols done" in printed
    assert "ASSET_MATERIALIZATION" not in printed, printed[-3000:]
    # ... while the run's own log keeps each symbol's materialization (a DEBUG event).
    stored = instance.all_logs(history[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert sorted(e.dagster_event.partition for e in stored) == NEW


def test_the_daemon_looks_at_backfills_every_ten_seconds():
    """A backfill launched from the UI starts within ~10 s, not Dagster's 30. This leans on
    two Dagster internals, pinned here: the backfill loop reads its interval from
    ``dagster._daemon.controller`` each time it starts, and the daemon's command imports that
    module before it opens the instance (which imports our storage module, which sets it)."""
    import inspect

    from dagster._daemon import backfill

    loop = inspect.getsource(backfill.execute_backfill_iteration_loop)
    assert "from dagster._daemon.controller import DEFAULT_DAEMON_INTERVAL_SECONDS" in loop
    assert "DEFAULT_DAEMON_INTERVAL_SECONDS - loop_duration" in loop
    # As `dagster-daemon run` does: its command module first, then the instance's storage.
    interval = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dagster._daemon.cli, mltrading_assets.lib.dagster_storage\n"
            "from dagster._daemon import controller\n"
            "print(controller.DEFAULT_DAEMON_INTERVAL_SECONDS)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert interval == "10"
