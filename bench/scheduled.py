"""scheduled_load: hourly ticks through the daemon path, on the synthetic clock.

After a full load, ``dagster dev`` (webserver, daemon, code server) runs with schedules off
(``MLTRADING_SCHEDULES=off``) and, for each tick, the bench asks the market-data schedule's
own function for its ranged run requests at that hour and submits them through the webserver
(GraphQL, the UI's path) to the run queue; the daemon launches them, and the features
follow-up sensor starts the features runs. A tick ends when every run it caused has ended.
Before the first tick, a backfill of both assets over every symbol with nothing new, launched
as the UI launches it and timed until the daemon marks it done.

Then the quality checks the :30 schedule would run. Per tick: wall time of bars and features
and of the checks, failed runs and partitions left without features for the newest bar,
check evaluations, peak client connections, the RSS of each long-lived process, event-log
bytes written; after the last tick, the UI's pages timed in Chromium (``bench.ui_pages``) and
the size of each table.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import sqlalchemy as sa

from mltrading_assets.workers.lifeline import STEP_PROCESS_NAME

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _role(process: psutil.Process) -> str:
    line = " ".join(process.cmdline())
    # As `dagster dev` (1.13.27) starts them.
    for marker, role in (
        ("-m dagster._daemon run", "daemon"),
        ("-m dagster_webserver", "webserver"),
        ("-m dagster api grpc", "code_server"),
        ("-m dagster code-server", "code_server_proxy"),
    ):
        if marker in line:
            return role
    return ""


def _holder(application_name: str) -> str:
    """Whose connection: the role of a ``dagster pid N`` process, else the app's own name."""
    if not application_name.startswith("dagster pid "):
        return application_name or "unnamed"
    try:
        process = psutil.Process(int(application_name.rsplit(" ", 1)[1]))
        line = " ".join(process.cmdline())
    except (psutil.Error, ValueError):
        return "dagster-gone"
    if "execute_run" in line or "execute-run" in line:
        return "dagster-run-worker"
    if "multiprocessing" in line:
        return "dagster-step"
    return "dagster-" + (_role(process) or "other")


def _market_hours_after(start: str, count: int) -> list[str]:
    """The next ``count`` ticks the market-data schedule would run: its cron's, less the
    hours NYSE is closed (holidays, after an early close)."""
    from dagster._utils.schedules import cron_string_iterator  # Dagster's own (1.13.27)

    from mltrading_assets.defs.market_data.schedules import market_data_schedule
    from mltrading_assets.trading_calendar import market_hours_skip_reason

    after = pd.Timestamp(start)
    cron = cron_string_iterator(
        after.timestamp(),
        market_data_schedule.cron_schedule,
        market_data_schedule.execution_timezone,
    )
    ticks: list[str] = []
    while len(ticks) < count:
        moment = pd.Timestamp(next(cron)).tz_convert("UTC")
        if moment > after and not market_hours_skip_reason(moment):
            ticks.append(moment.isoformat())
    return ticks


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every process, PostgreSQL included): on
    two cores a tick's wall time can be no less than half of what it adds to this."""
    times = psutil.cpu_times()
    return (
        times.user
        + times.nice
        + times.system
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


def _tree_role(process: psutil.Process, parent_role: str) -> str:
    """What a process of the ``dagster dev`` tree is: a long-lived one by its command line,
    else by whom it was started (runs by the code server's forkserver, and their steps too,
    named as such; symbol workers by a step; a run's own forkserver, where it has one, by
    the run, and its steps by that forkserver)."""
    role = _role(process)
    if role:
        return role
    if parent_role == "run_forkserver":
        return "step" if process.name() == STEP_PROCESS_NAME else "run"
    return {
        "code_server": "run_forkserver",
        "run": "forkserver",
        "forkserver": "step",
        "step": "symbol_worker",
    }.get(parent_role, parent_role or "other")


class CpuByRole(threading.Thread):
    """CPU seconds each kind of process spends while it runs, by sampling the ``dagster dev``
    tree (short-lived runs, steps and workers included: what ends between two samples is
    lost, a fraction of a second each) and PostgreSQL's backends (exact: the postmaster
    accounts for the ones it has reaped)."""

    def __init__(self, root: psutil.Process, postmaster: psutil.Process, interval: float = 0.25):
        super().__init__(daemon=True)
        self._root, self._postmaster, self._interval = root, postmaster, interval
        self._stop_event = threading.Event()
        self._roles: dict[int, str] = {root.pid: "dev"}
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._postgres_first = self._postgres()
        self._sample()
        self._first = dict(self._last)

    def _postgres(self) -> float:
        own = self._postmaster.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in self._postmaster.children():
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def _sample(self) -> None:
        for process in self._root.children(recursive=True):
            try:
                # Asked again while it may be a step that has not named itself yet (or a
                # symbol worker of one).
                if self._roles.get(process.pid, "run") in ("run", "forkserver"):
                    parent = process.ppid()
                    self._roles[process.pid] = _tree_role(process, self._roles.get(parent, ""))
                times = process.cpu_times()
                self._last[process.pid] = times.user + times.system
            except psutil.Error:
                continue

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join()
        self._sample()
        spent: dict[str, float] = {"postgres": self._postgres() - self._postgres_first}
        for pid, seconds in self._last.items():
            role = self._roles[pid]
            spent[role] = spent.get(role, 0.0) + seconds - self._first.get(pid, 0.0)
        return spent


def long_lived_rss(root: psutil.Process) -> dict[str, float]:
    """RSS (MB) of the processes that live across ticks: webserver, daemon, code server."""
    rss: dict[str, float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            role = _role(process)
            if role:
                rss[role] = max(rss.get(role, 0.0), process.memory_info().rss / 2**20)
        except psutil.Error:
            continue
    return rss


def scheduled_load(
    url: str,
    database: str,
    home: str,
    symbols: list[str],
    engine: sa.Engine,
    instance,
    clock,
    resources,
    ticks: int = 3,
) -> list[str]:
    from bench.monitor import Monitor, client_connections, count_by
    from mltrading_assets.lib.partitions import partitions_among
    from mltrading_assets.lib.schedules import check_tick_requests, tick_requests
    from mltrading_assets.names import RunTags
    from mltrading_assets.paths import PROJECT_ROOT

    port = _free_port()
    log = Path(home) / "dagster-dev.log"
    env = {
        **os.environ,
        "MLTRADING_SCHEDULES": "off",
        "MLTRADING_SYNTHETIC_AS_OF": clock(0),
    }
    dev = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
        + ["-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        client = _wait_for_webserver(port, dev, log)
        root = psutil.Process(dev.pid)

        def scalar(sql: str) -> int:
            with engine.connect() as conn:
                return conn.exec_driver_sql(sql).scalar_one()

        postmaster = psutil.Process(scalar("SELECT pg_backend_pid()")).parent()
        line = _ui_backfill(client, engine, symbols)
        print(line, flush=True)
        lines.append(line)

        for tick, as_of in enumerate(_market_hours_after(clock(0), ticks), start=1):
            requests = tick_requests(
                partitions_among(instance, symbols), pd.Timestamp(as_of), f"bench-tick-{tick}"
            )
            first_event = scalar("SELECT coalesce(max(id), 0) FROM dagster.event_logs")
            with Monitor(engine, database, holder=_holder) as monitor:
                cpu_before = _busy_cpu_s()
                roles = CpuByRole(root, postmaster)
                roles.start()
                started = time.perf_counter()
                bar_runs = [
                    client.submit_job_execution(
                        "market_data_job", run_config=resources(as_of), tags=request.tags
                    )
                    for request in requests
                ]
                tick_runs = _wait_for_tick(instance, bar_runs, RunTags.FEATURES_AFTER)
                statuses = list(tick_runs.values())
                wall = time.perf_counter() - started
                cpu = _busy_cpu_s() - cpu_before
                spent_by_role = roles.stop()
                # The :30 quality schedule's runs, as it requests them.
                check_requests = check_tick_requests(
                    partitions_among(instance, symbols),
                    pd.Timestamp(as_of) + pd.Timedelta(minutes=30),
                    f"bench-checks-{tick}",
                )
                checks_record = check_requests[0].tags.get(RunTags.CHECKS_RECORD, "every")
                started = time.perf_counter()
                checks_cpu_before = _busy_cpu_s()
                check_runs = [
                    client.submit_job_execution(
                        "quality_checks_job", run_config=resources(as_of), tags=request.tags
                    )
                    for request in check_requests
                ]
                statuses += _wait_for_runs(instance, check_runs)
                checks_wall = time.perf_counter() - started
                checks_cpu = _busy_cpu_s() - checks_cpu_before
            features_runs = [run_id for run_id in tick_runs if run_id not in bar_runs]
            per_run = {
                job: run_seconds(engine, run_ids)
                for job, run_ids in (
                    ("bars", bar_runs),
                    ("features", features_runs),
                    ("checks", check_runs),
                )
            }
            # Serialized, and as stored: PostgreSQL compresses a value only in a row over
            # ~2 KB (a materialization or a run's planned symbols, not a check evaluation).
            event_bytes, stored_bytes = (
                scalar(
                    f"SELECT coalesce(sum({size}(event)), 0) FROM dagster.event_logs "
                    f"WHERE id > {first_event}"
                )
                for size in ("octet_length", "pg_column_size")
            )
            evaluations = scalar(
                "SELECT count(*) FROM dagster.event_logs WHERE dagster_event_type = "
                f"'ASSET_CHECK_EVALUATION' AND id > {first_event}"
            )
            behind = scalar(
                "SELECT count(*) FROM (SELECT m.symbol FROM public.market_data m "
                "LEFT JOIN public.feature_engineered_data f USING (symbol, source, timestamp) "
                "GROUP BY m.symbol HAVING max(m.timestamp) > coalesce(max(f.timestamp), "
                "'-infinity')) b"
            )
            rss = long_lived_rss(root)
            time.sleep(2)
            with engine.connect() as conn:
                at_rest = count_by(client_connections(conn, database), _holder)
            failed = sum(status != "SUCCESS" for status in statuses)
            line = (
                f"BENCH scenario=scheduled_tick tick={tick} symbols={len(symbols)} "
                f"wall_s={wall:.2f} cpu_s={cpu:.1f} "
                + "".join(
                    f"cpu_{role}_s={spent:.1f} " for role, spent in sorted(spent_by_role.items())
                )
                + f"checks_s={checks_wall:.2f} checks_record={checks_record} "
                f"checks_cpu_s={checks_cpu:.1f} "
                + "".join(f"{job}_run_s={seconds:.1f} " for job, seconds in per_run.items())
                + f"symbols_per_run={len(symbols) / len(bar_runs):.0f} runs={len(statuses)} "
                f"failed_runs={failed} check_evaluations={evaluations} "
                f"symbols_without_newest_features={behind} "
                f"peak_connections={monitor.peaks.connections} "
                f"at_peak={','.join(f'{k}:{n}' for k, n in sorted(monitor.peaks.holders.items()))} "
                f"at_rest={','.join(f'{k}:{n}' for k, n in sorted(at_rest.items()))} "
                f"event_log_mb={event_bytes / 2**20:.1f} "
                f"event_log_mb_per_1000={event_bytes / 2**20 / len(symbols) * 1000:.1f} "
                f"event_log_stored_mb_per_1000={stored_bytes / 2**20 / len(symbols) * 1000:.1f} "
                + " ".join(f"rss_{role}_mb={mb:.0f}" for role, mb in sorted(rss.items()))
            )
            print(line, flush=True)
            lines.append(line)
        line = ui_line(port, symbols, bar_runs[-1], scalar)
        print(line, flush=True)
        lines.append(line)
        line = f"BENCH scenario=tables symbols={len(symbols)} {table_sizes(engine)}"
        print(line, flush=True)
        lines.append(line)
    finally:
        os.killpg(dev.pid, 15)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, 9)
    return lines


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def launch_backfill_of_both_assets(client) -> str:
    """A backfill of both assets over every partition, launched as the UI launches it (the
    webserver's GraphQL mutation); its id."""
    params = {
        "assetSelection": [{"path": ["market_data"]}, {"path": ["feature_engineered_data"]}],
        "allPartitions": True,
    }
    launched = client._execute(LAUNCH_BACKFILL, {"params": params})  # noqa: SLF001
    backfill_id = launched["launchPartitionBackfill"].get("backfillId")
    if backfill_id is None:
        raise SystemExit(f"the backfill was not launched: {launched}")
    return backfill_id


def backfill_runs(engine: sa.Engine, backfill_id: str) -> dict[str, str]:
    """Status of each run the backfill launched, by run id."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.run_id, r.status FROM dagster.runs r JOIN dagster.run_tags t ON "
                "t.run_id = r.run_id AND t.key = 'dagster/backfill' AND t.value = :id"
            ),
            {"id": backfill_id},
        ).all()
    return dict(rows)


def wait_for_backfill(engine: sa.Engine, backfill_id: str, timeout: float = 3600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM dagster.bulk_actions WHERE key = :id"),
                {"id": backfill_id},
            ).scalar_one()
        unfinished = set(backfill_runs(engine, backfill_id).values()) - FINISHED
        if status not in ("REQUESTED", "CANCELING") and not unfinished:
            return status
        time.sleep(1)
    raise SystemExit(f"backfill {backfill_id} not done after {timeout} s")


def _ui_backfill(client, engine: sa.Engine, symbols: list[str]) -> str:
    """A backfill of both assets over every symbol with nothing new (the full load's clock),
    launched as the UI does and timed until the daemon marks it done: what a user waits for
    after asking for everything again."""
    started = time.perf_counter()
    backfill_id = launch_backfill_of_both_assets(client)
    status = wait_for_backfill(engine, backfill_id)
    wall = time.perf_counter() - started
    runs = backfill_runs(engine, backfill_id).values()
    failed = sum(run_status != "SUCCESS" for run_status in runs)
    return (
        f"BENCH scenario=ui_backfill symbols={len(symbols)} wall_s={wall:.2f} "
        f"status={status} runs={len(runs)} failed_runs={failed}"
    )


def ui_line(port: int, symbols: list[str], ranged_run_id: str, scalar) -> str:
    """The UI's pages over this universe, timed in Chromium (``bench.ui_pages``)."""
    from bench.ui_pages import chromium, time_pages

    head = f"BENCH scenario=ui symbols={len(symbols)}"
    if chromium() is None:
        return f"{head} skipped=no_chromium(apt-get install chromium)"

    def newest_backfill() -> str:
        return scalar(
            "SELECT coalesce((SELECT key FROM dagster.bulk_actions ORDER BY id DESC LIMIT 1), '')"
        )

    seconds = time_pages(
        f"http://127.0.0.1:{port}",
        symbols[len(symbols) // 2],
        ranged_run_id,
        len(symbols),
        newest_backfill,
    )
    # The canceled backfill's runs end before the tables are measured.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and scalar(
        "SELECT count(*) FROM dagster.runs WHERE status IN "
        "('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED', 'CANCELING')"
    ):
        time.sleep(2)
    figures = " ".join(
        f"{name}_s={'never' if s is None else f'{s:.2f}'}" for name, s in seconds.items()
    )
    slowest = max((s for s in seconds.values() if s is not None), default=0.0)
    in_run = scalar(
        "SELECT count(*) FROM dagster.event_logs WHERE dagster_event_type = "
        f"'ASSET_MATERIALIZATION' AND run_id = '{ranged_run_id}'"
    )
    return f"{head} {figures} slowest_s={slowest:.2f} ranged_run_partitions={in_run}"


def _wait_for_webserver(port: int, dev: subprocess.Popen, log: Path):
    from dagster_graphql import DagsterGraphQLClient

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise SystemExit("dagster dev exited:\n" + log.read_text()[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
            # Up once the code location lists the job (dagster_graphql's own lookup, private
            # in 1.13.27; bench only).
            if client._get_repo_locations_and_names_with_pipeline("market_data_job"):
                return client
        except Exception:
            time.sleep(1)
    raise SystemExit("dagster dev did not come up:\n" + log.read_text()[-3000:])


def _wait_for_runs(instance, run_ids: list[str], timeout: float = 1800) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        if all(run.status.value in FINISHED for run in runs):
            return [run.status.value for run in runs]
        time.sleep(1)
    raise SystemExit(f"runs not done after {timeout} s")


def table_sizes(engine: sa.Engine) -> str:
    """Size on disk (MB, with indexes) of each application table and of Dagster's event log."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND (n.nspname = 'public' OR (n.nspname = 'dagster' "
            "AND c.relname IN ('event_logs', 'runs', 'asset_check_executions'))) "
            "ORDER BY 2 DESC"
        ).all()
    return " ".join(f"{name}_mb={size / 2**20:.0f}" for name, size in rows if size > 2**20)


def run_seconds(engine: sa.Engine, run_ids: list[str]) -> float:
    """The mean time from start to end of ``run_ids`` (launch and queue excluded)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT coalesce(avg(end_time - start_time), 0) FROM dagster.runs "
                "WHERE run_id = ANY(:ids)"
            ),
            {"ids": list(run_ids)},
        ).scalar_one()


def _wait_for_tick(
    instance, bar_runs: list[str], follows_tag: str, timeout: float = 1800
) -> dict[str, str]:
    """Wait until the bar runs and the features runs that follow them have all ended; the
    status of each, by run id."""
    import dagster as dg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bars = [instance.get_run_by_id(run_id) for run_id in bar_runs]
        followers = [
            run
            for run_id in bar_runs
            for run in instance.get_runs(filters=dg.RunsFilter(tags={follows_tag: run_id}))
        ]
        done_bars = all(run.status.value in FINISHED for run in bars)
        followed = {run.tags[follows_tag] for run in followers}
        succeeded = {run.run_id for run in bars if run.status.value == "SUCCESS"}
        if (
            done_bars
            and succeeded <= followed
            and all(run.status.value in FINISHED for run in followers)
        ):
            return {run.run_id: run.status.value for run in bars + followers}
        time.sleep(1)
    raise SystemExit(f"tick not done after {timeout} s")
