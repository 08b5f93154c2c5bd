"""scale_out: the same work on 1 worker host and on 2, each host pinned to a core of its own
(`taskset`), so a 2-core machine can show what a second host brings. PostgreSQL, the broker
and the runs' orchestrators share those two cores, so this undercounts a real second
machine. Needs root (the hosts are network namespaces; see mltrading_assets_tests/netns_hosts.py).

Prints, per host count, the full load (a year of bars and every feature of N synthetic
symbols, one range per host at a time) and, on 2 hosts, the yahoo refresh with one client
address per host against the local Yahoo-compatible server:
BENCH scenario=scale_out_full_load hosts=<h> symbols=<N> symbols_per_run=<k> wall_s=<x>
      peak_connections=<k> connection_budget=<hosts x (workers + 3)>
      worker_host_peak=<the busiest worker host's share, against workers + 3>
      at_peak=<host:role=k,...>
BENCH scenario=scale_out_speedup symbols=<N> speedup=<1-host wall / 2-host wall>
BENCH scenario=scale_out_yahoo_refresh hosts=2 symbols=<N> symbols_per_run=<k> wall_s=<x>
      floor_s=<N x latency / (5 x 2)> ratio=<x> requests_per_symbol=<x>
      peak_in_flight_per_address=<a:k,...>

and the daemon's path on 2 hosts (`mltrading ui` on the control host, runs of 500 symbols as
users get them): a backfill of both assets over every symbol launched as the UI launches it
(nothing new to load), then an hourly tick as the schedule requests it, features following;
once with each step sent to the hosts (celery=steps, the celery executor) and once with each
whole run (celery=runs, CeleryRunLauncher):
BENCH scenario=scale_out_backfill|scale_out_tick celery=<steps|runs> hosts=2 symbols=<N>
      wall_s=<x> runs=<k> failed_runs=<k> steps_per_host=<host:k,...> peak_connections=<k>
      at_peak=<...>
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from bench.monitor import Monitor

SLOTS = 5
# The full load's ranges: four of them for 1,000 symbols, two per host (with ranges of 100
# the fixed cost of each run, ~2 s of Dagster and Celery around every step, ate a third of
# the second host's gain). The yahoo refresh uses the users' default, 500.
SYMBOLS_PER_RUN = 250
REFRESH_SYMBOLS_PER_RUN = 500


def _materialize(cluster, symbols: list[str], *args: str) -> float:
    started = time.perf_counter()
    done = cluster.cli("materialize", *args, "--symbols", ",".join(symbols))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"materialize failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return wall


def _holder(built) -> Callable[[str], str]:
    """``host:role`` of a connection: the host by its address (the control host has the
    bridge's), the role by its name (Dagster's storage names its ``dagster pid N``)."""
    hosts = {address: f"host{i + 1}" for i, address in enumerate(built.hosts.addresses)}

    def holder(address_and_name: str) -> str:
        address, _, name = address_and_name.partition(" ")
        role = "dagster" if name.startswith("dagster pid") else name or "unnamed"
        return f"{hosts.get(address, 'control')}:{role}"

    return holder


def _monitor(built) -> Monitor:
    """Connections to the cluster's database, sampled, with their host and role."""
    return Monitor(built.engine, "cluster", 0.5, _holder(built), by_address=True)


def _at_peak(holders: dict[str, int]) -> str:
    return ",".join(f"{holder}={n}" for holder, n in sorted(holders.items()))


def _busiest_worker_host(holders: dict[str, int]) -> int:
    """The most connections one worker host held at the peak (the budget is per host)."""
    by_host: dict[str, int] = {}
    for holder, n in holders.items():
        host = holder.split(":", 1)[0]
        if host != "control":
            by_host[host] = by_host.get(host, 0) + n
    return max(by_host.values(), default=0)


def _full_load(hosts: int, symbols: int) -> float:
    from mltrading_assets_tests.netns_hosts import cluster

    names = [f"S{i:05d}" for i in range(symbols)]
    settings = {"MLTRADING_SOURCE": "synthetic", "MLTRADING_SYMBOLS_PER_RUN": str(SYMBOLS_PER_RUN)}
    with cluster(Path(tempfile.mkdtemp()), hosts, pin_cores=True, env=settings) as built:
        with _monitor(built) as monitor:
            wall = _materialize(built, names)
        # A worker per host (one core each) holds a connection, plus each host's Celery
        # process and its step's Dagster storage, plus the orchestrators on the control host.
        budget = hosts * (1 + 3)
        print(
            f"BENCH scenario=scale_out_full_load hosts={hosts} symbols={symbols} "
            f"symbols_per_run={SYMBOLS_PER_RUN} wall_s={wall:.2f} "
            f"peak_connections={monitor.peaks.connections} connection_budget={budget} "
            f"worker_host_peak={_busiest_worker_host(monitor.peaks.holders)} "
            f"at_peak={_at_peak(monitor.peaks.holders)}",
            flush=True,
        )
    return wall


def _yahoo_refresh(symbols: int, latency: float) -> None:
    from mltrading_assets_tests.netns_hosts import cluster

    names = [f"Y{i:05d}" for i in range(symbols)]
    settings = {
        "MLTRADING_MAX_CONCURRENT_REQUESTS": str(SLOTS),
        "MLTRADING_SYMBOLS_PER_RUN": str(REFRESH_SYMBOLS_PER_RUN),
    }
    with cluster(Path(tempfile.mkdtemp()), 2, pin_cores=True, env=settings) as built:
        yahoo = built.yahoo
        for name in names:
            yahoo.bars(name)  # built before anything is timed
        yahoo.latency_s = 0.0
        _materialize(built, names, "--asset", "market_data")  # the first load: set-up
        yahoo.advance(pd.Timedelta(hours=1))
        yahoo.latency_s = latency
        yahoo.stats.peak_by_address.clear()
        before = sum(yahoo.stats.chart_requests[name] for name in names)
        wall = _materialize(built, names, "--asset", "market_data")
        requests = sum(yahoo.stats.chart_requests[name] for name in names) - before
        floor = symbols * latency / (SLOTS * 2)
        peaks = ",".join(f"{a}:{n}" for a, n in sorted(yahoo.stats.peak_by_address.items()))
        print(
            f"BENCH scenario=scale_out_yahoo_refresh hosts=2 symbols={symbols} "
            f"symbols_per_run={REFRESH_SYMBOLS_PER_RUN} latency_s={latency:.3f} "
            f"wall_s={wall:.2f} floor_s={floor:.2f} "
            f"ratio={wall / floor:.2f} requests_per_symbol={requests / symbols:.2f} "
            f"peak_in_flight_per_address={peaks}",
            flush=True,
        )


@contextlib.contextmanager
def _ui(built) -> Iterator:
    """`mltrading ui` on the control host; a GraphQL client to its webserver."""
    from bench.scheduled import _free_port, _wait_for_webserver
    from mltrading_assets.paths import PROJECT_ROOT

    port, log = _free_port(), built.folder / "ui.log"
    ui = subprocess.Popen(
        [sys.executable, "-m", "mltrading_assets.cli", "ui", "--port", str(port),
         "--charts-port", str(_free_port())],
        cwd=PROJECT_ROOT, env=built.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield _wait_for_webserver(port, ui, log)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)


def _control_instance(built):
    """The control host's Dagster instance, opened in this process."""
    import dagster as dg

    saved = dict(os.environ)
    home = built.env.get("DAGSTER_HOME") or str(built.folder / "control" / "dagster_home")
    os.environ.update(built.env, DAGSTER_HOME=home)
    try:
        return dg.DagsterInstance.get()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _runs_and_hosts(engine: sa.Engine, run_ids: list[str]) -> tuple[int, str]:
    """Failed runs among ``run_ids``, and how many of their steps each host ran."""
    with engine.connect() as conn:
        failed = conn.execute(
            sa.text(
                "SELECT count(*) FROM dagster.runs WHERE run_id = ANY(:ids) AND status <> 'SUCCESS'"
            ),
            {"ids": run_ids},
        ).scalar_one()
        hosts = conn.execute(
            sa.text(
                "SELECT value, count(*) FROM dagster.run_tags WHERE run_id = ANY(:ids) "
                "AND key LIKE 'mltrading/%.host' GROUP BY value ORDER BY value"
            ),
            {"ids": run_ids},
        ).all()
    return failed, ",".join(f"{host}:{n}" for host, n in hosts)


def _why_runs_failed(engine: sa.Engine, run_ids: list[str]) -> list[str]:
    """The failure messages of the runs among ``run_ids`` that did not succeed."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT e.run_id || ': ' || e.dagster_event_type || ' ' || "
                    "left(e.event::json ->> 'user_message', 300) FROM dagster.event_logs e "
                    "JOIN dagster.runs r ON r.run_id = e.run_id WHERE r.run_id = ANY(:ids) "
                    "AND r.status <> 'SUCCESS' AND e.dagster_event_type IN "
                    "('RUN_FAILURE', 'STEP_FAILURE', 'ENGINE_EVENT') ORDER BY e.id"
                ),
                {"ids": run_ids},
            ).scalars()
        )


def _print_daemon_line(scenario, mode, built, symbols, wall, run_ids, monitor) -> None:
    failed, hosts = _runs_and_hosts(built.engine, run_ids)
    for line in _why_runs_failed(built.engine, run_ids) if failed else []:
        print(f"  failed run {line}", flush=True)
    print(
        f"BENCH scenario={scenario} celery={mode} hosts=2 symbols={symbols} wall_s={wall:.2f} "
        f"runs={len(run_ids)} failed_runs={failed} steps_per_host={hosts} "
        f"peak_connections={monitor.peaks.connections} at_peak={_at_peak(monitor.peaks.holders)}",
        flush=True,
    )


def _runs_mode_settings(folder: Path) -> dict[str, str]:
    """Settings that send whole runs to the worker hosts: dagster-celery's run launcher in
    the instance of every host. Run monitoring is off there: it asks the launcher whether
    each run's task is alive, which the default ``rpc://`` result backend cannot tell (the
    answer is PENDING), and it then fails every run that outlives one monitoring poll."""
    import yaml

    from mltrading_assets.paths import PROJECT_ROOT

    instance = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    instance["run_launcher"] = {
        "module": "dagster_celery.launcher",
        "class": "CeleryRunLauncher",
        "config": {"broker": {"env": "MLTRADING_CELERY_BROKER"}},
    }
    instance["run_monitoring"]["enabled"] = False
    home = folder / "dagster_home_runs"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    return {"MLTRADING_CELERY_MODE": "runs", "DAGSTER_HOME": str(home)}


def _daemon_path(symbols: int, clock: Callable[[int], str], resources, mode: str) -> None:
    """A backfill and a tick through the daemon; ``mode`` steps: each step is a Celery task
    (the celery executor), runs: each run is one (CeleryRunLauncher, multiprocess inside)."""

    from bench.scheduled import (
        _wait_for_tick,
        backfill_runs,
        launch_backfill_of_both_assets,
        wait_for_backfill,
    )
    from mltrading_assets.lib.partitions import partitions_among
    from mltrading_assets.lib.schedules import tick_requests
    from mltrading_assets.names import RunTags
    from mltrading_assets_tests.netns_hosts import cluster

    names = [f"D{i:05d}" for i in range(symbols)]
    settings = {
        "MLTRADING_SOURCE": "synthetic",
        "MLTRADING_SYNTHETIC_AS_OF": clock(0),
        "MLTRADING_SCHEDULES": "off",
    }
    folder = Path(tempfile.mkdtemp())
    if mode == "runs":
        settings.update(_runs_mode_settings(folder))
    with cluster(folder, 2, pin_cores=True, env=settings) as built:
        _materialize(built, names)  # the first load: set-up
        instance = _control_instance(built)
        with _ui(built) as client:
            with _monitor(built) as monitor:
                started = time.perf_counter()
                backfill_id = launch_backfill_of_both_assets(client)
                wait_for_backfill(built.engine, backfill_id)
                wall = time.perf_counter() - started
            run_ids = list(backfill_runs(built.engine, backfill_id))
            _print_daemon_line("scale_out_backfill", mode, built, symbols, wall, run_ids, monitor)

            as_of = clock(1)
            requests = tick_requests(
                partitions_among(instance, names), pd.Timestamp(as_of), "bench-tick"
            )
            with _monitor(built) as monitor:
                started = time.perf_counter()
                bar_runs = [
                    client.submit_job_execution(
                        "market_data_job", run_config=resources(as_of), tags=request.tags
                    )
                    for request in requests
                ]
                tick_runs = _wait_for_tick(instance, bar_runs, RunTags.FEATURES_AFTER)
                wall = time.perf_counter() - started
            _print_daemon_line(
                "scale_out_tick", mode, built, symbols, wall, list(tick_runs), monitor
            )
        instance.dispose()


def scale_out(symbols: int, latency: float, clock, resources) -> None:
    one = _full_load(1, symbols)
    two = _full_load(2, symbols)
    print(
        f"BENCH scenario=scale_out_speedup symbols={symbols} one_host_s={one:.2f} "
        f"two_hosts_s={two:.2f} speedup={one / two:.2f}",
        flush=True,
    )
    _yahoo_refresh(symbols, latency)
    for mode in ("steps", "runs"):
        _daemon_path(symbols, clock, resources, mode)
