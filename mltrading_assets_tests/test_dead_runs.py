"""A `mltrading materialize` killed mid-run (kill -9) must not block later runs: its run is
marked failed and its slot of the market_data_source pool given back, by the next CLI run,
by `mltrading doctor --fix`, and by the dead_runs_sensor."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from click.testing import CliRunner

from mltrading_assets.cli import main
from mltrading_assets.lib.partitions import register_partitions
from mltrading_assets.paths import PROJECT_ROOT


def start_a_run_and_kill_it(instance, database_url, dagster_home) -> str:
    register_partitions(instance, ["HANG"])
    env = {
        **os.environ,
        "MLTRADING_DATABASE_URL": database_url,
        "DAGSTER_HOME": str(dagster_home),
        "MLTRADING_FAULT_INJECTION": "HANG=hang",  # the symbol's worker sleeps
        "MLTRADING_SYNTHETIC_AS_OF": "2026-11-20T21:00:00Z",
    }
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mltrading_assets.cli",
            "materialize",
            "--asset",
            "market_data",
            "--symbols",
            "HANG",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            held = instance.event_log_storage.get_concurrency_run_ids()
            if runs and runs[0].run_id in held:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the run never started and took its pool slot")
        os.kill(cli.pid, signal.SIGKILL)  # the CLI process only, as a user's kill -9 does
        cli.wait(10)
        return runs[0].run_id
    finally:
        # Its step process and worker are orphans now; this test is not about them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)


def test_a_killed_cli_run_is_reaped_by_the_next_run(instance, db, database_url, dagster_home):
    dead = start_a_run_and_kill_it(instance, database_url, dagster_home)
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.STARTED
    assert dead in instance.event_log_storage.get_concurrency_run_ids()

    result = CliRunner().invoke(
        main, ["materialize", "--asset", "market_data", "--symbols", "AAPL"]
    )

    assert result.exit_code == 0, result.output
    assert f"marked run {dead} (market_data_job) failed: its process" in result.output
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert dead not in instance.event_log_storage.get_concurrency_run_ids()
    assert "market_data: run" in result.output and " ok" in result.output


def test_doctor_reports_a_dead_run_and_fixes_it(
    instance, db, database_url, dagster_home, monkeypatch
):
    dead = start_a_run_and_kill_it(instance, database_url, dagster_home)
    # Another host cannot see this host's processes: it never judges the run (hosts sharing
    # this kernel would even see its pid free).
    monkeypatch.setenv("MLTRADING_HOST_NAME", "another-host")
    elsewhere = json.loads(CliRunner().invoke(main, ["doctor", "--json", "--fix"]).output)
    assert elsewhere["dagster"]["dead_runs"] == [] and elsewhere["fixed"] == []
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.STARTED
    monkeypatch.delenv("MLTRADING_HOST_NAME")

    report = json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)
    assert report["dagster"]["dead_runs"] == [dead]
    assert any("its process is gone" in p for p in report["problems"])

    fixed = json.loads(CliRunner().invoke(main, ["doctor", "--json", "--fix"]).output)
    assert fixed["fixed"][0] == f"marked run {dead} failed"
    assert fixed["dagster"]["dead_runs"] == []
    assert fixed["dagster"]["slots_held_by_finished_runs"] == []
    assert dead not in instance.event_log_storage.get_concurrency_run_ids()


def test_the_sensor_reaps_dead_runs(instance, db, database_url, dagster_home):
    from mltrading_assets.defs.operations.sensors import dead_runs_sensor

    dead = start_a_run_and_kill_it(instance, database_url, dagster_home)
    result = dead_runs_sensor(dg.build_sensor_context(instance=instance))
    assert "marked 1 dead run(s) failed" in str(result.skip_message)
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert dead not in instance.event_log_storage.get_concurrency_run_ids()


def _init_marks(folder: str) -> None:
    os.environ["MARK_FOLDER"] = folder


def _slow_mark(symbol: str) -> dict:
    time.sleep(0.3)
    (Path(os.environ["MARK_FOLDER"]) / symbol).touch()
    return {}


def test_an_interrupted_batch_starts_no_further_symbol(tmp_path):
    # Ctrl-C or SIGTERM in a step ends its loop over outcomes with an exception: the
    # symbols not started yet must not run (they used to, every one of them).
    from mltrading_assets.workers.isolation import run_isolated

    symbols = [f"S{i:02d}" for i in range(40)]
    outcomes = run_isolated(
        _slow_mark,
        symbols,
        initializer=_init_marks,
        initargs=(str(tmp_path),),
        workers=2,
        timeout_seconds=30,
    )
    next(outcomes)
    outcomes.close()  # what an exception in the consumer does to the generator
    written = len(list(tmp_path.iterdir()))
    time.sleep(1.0)  # anything still queued would now be running and writing
    assert len(list(tmp_path.iterdir())) == written
    assert written <= 4


def _die_in_the_first_pool(folder: str, always: bool) -> None:
    # The first worker to start dies before it takes a symbol, as a worker killed between
    # two symbols does; ``always``: every worker does (a worker that cannot start).
    first = Path(folder) / "first-worker"
    if always or not first.exists():
        first.touch()
        os._exit(3)


def _quick(symbol: str) -> dict:
    return {"symbol": symbol}


@pytest.mark.parametrize("always", [False, True])
def test_a_worker_dying_between_symbols_costs_no_symbol(tmp_path, always):
    # pebble gives up on a pool whose worker died while no symbol was running, failing the
    # symbols it had handed out and never resolving the ones it had not: a batch with a
    # worker killed at that moment failed every symbol, or waited for ever.
    from mltrading_assets.workers.isolation import POOL_STARTS, run_isolated

    symbols = [f"S{i:04d}" for i in range(2000)]  # more than the pool's pipe holds
    outcomes: list = []
    batch = threading.Thread(
        target=lambda: outcomes.extend(
            run_isolated(
                _quick,
                symbols,
                initializer=_die_in_the_first_pool,
                initargs=(str(tmp_path), always),
                workers=1,
                timeout_seconds=30,
            )
        ),
        daemon=True,
    )
    batch.start()
    batch.join(120)
    assert not batch.is_alive(), f"the batch hangs with {len(outcomes)} outcomes"
    assert sorted(o.symbol for o in outcomes) == symbols
    failed = [o for o in outcomes if not o.ok]
    if not always:
        assert failed == []
    else:  # bounded: a worker that cannot start fails the batch, saying so, once per symbol
        assert len(failed) == len(symbols)
        assert f"of {POOL_STARTS} pools in a row died before taking a symbol" in failed[0].error


def _watched_by_a_step() -> tuple[int, int, int, int]:
    """In a run process: its pid and its parent's, and those of the orchestrator a step
    started as the multiprocess executor starts one would watch and of that step's parent
    (whose forkserver workers, checked here, come from a server of its own)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as steps:
        watched, step_parent = steps.submit(_orchestrator_and_parent_pids).result()
        step_pid, workers_server_parent = steps.submit(_pid_and_workers_server_parent).result()
    assert workers_server_parent == step_pid, "the step's workers would outlive it"
    return os.getpid(), os.getppid(), watched, step_parent


def _pid_and_workers_server_parent() -> tuple[int, int]:
    return os.getpid(), _forkserver_workers_server_parent()


def _orchestrator_and_parent_pids() -> tuple[int, int]:
    from mltrading_assets.workers.lifeline import orchestrator

    return orchestrator().pid, os.getppid()


def _forkserver_workers_server_parent() -> int:
    """In a step: whose child the forkserver of its symbol workers is."""
    from concurrent.futures import ProcessPoolExecutor

    from mltrading_assets.workers.isolation import _context

    with ProcessPoolExecutor(1, mp_context=_context("forkserver")) as workers:
        server = workers.submit(os.getppid).result()
    return psutil.Process(server).ppid()


def test_a_run_forks_its_steps_from_its_own_server_and_each_step_watches_the_run():
    """A run forked from a forkserver that has loaded the code (the code server's, a
    command's) forks its steps from that server too, instead of starting a forkserver of its
    own (~2 s of CPU a run); its steps, siblings of the run, must still watch the run, not
    the server (a run killed alone would leave its steps running), and a step's forkserver
    workers must still be its own descendants (they die with it)."""
    from concurrent.futures import ProcessPoolExecutor

    from mltrading_assets.lib import run_processes

    with ProcessPoolExecutor(1, mp_context=run_processes.context()) as runs:
        run_pid, server_pid, watched, step_parent = runs.submit(_watched_by_a_step).result(
            timeout=120
        )
    assert run_pid != os.getpid()
    assert step_parent == server_pid
    assert watched == run_pid


def test_definitions_that_fail_to_load_fail_each_run_saying_why(tmp_path):
    """The run processes' server loads the definitions before it forks any; a failure there
    must reach each run as the error itself, not kill the server ("unexpected EOF")."""
    script = (
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from mltrading_assets.lib import run_processes\n"
        "def load():\n"
        "    import mltrading_assets.definitions\n"
        "if __name__ == '__main__':\n"
        "    assert run_processes.start_early(None)\n"
        "    with ProcessPoolExecutor(1, mp_context=run_processes.context()) as runs:\n"
        "        runs.submit(load).result()\n"
    )
    (tmp_path / "runs.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRADING", "DAGSTER"))}
    # Worker hosts without a database every host reaches: the definitions refuse to load.
    env["MLTRADING_CELERY_BROKER"] = "amqp://guest@127.0.0.1:5672//"
    done = subprocess.run(
        [sys.executable, str(tmp_path / "runs.py")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "MLTRADING_CELERY_BROKER is set but MLTRADING_DATABASE_URL is not" in done.stderr
    assert "EOFError" not in done.stderr
