"""Health report: is the database reachable, and does every table live in its schema?"""

from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from mltrading_assets.db import reports
from mltrading_assets.db.engine import APP_SCHEMA, DAGSTER_SCHEMA, one_connection, redacted
from mltrading_assets.db.tables import APP_TABLES

# A few of the tables dagster-postgres creates; enough to tell where its storage went.
DAGSTER_TABLES = ("runs", "event_logs", "jobs", "instance_info")


@dataclass
class Report:
    database: str
    reachable: bool = False
    tables: dict[str, list[str]] = field(default_factory=dict)
    dagster: dict = field(default_factory=dict)
    freshness: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check(url: str) -> Report:
    report = Report(database=redacted(url))
    try:
        with one_connection(url, application_name="mltrading-doctor") as conn:
            report.reachable = True
            report.tables = reports.tables_by_schema(conn)
            dagster_schema = reports.schema_exists(conn, DAGSTER_SCHEMA)
            report.server["autovacuum"] = conn.exec_driver_sql("SHOW autovacuum").scalar_one()
    except sa.exc.OperationalError as exc:
        report.problems.append(f"database not reachable: {str(exc.orig).strip()}")
        return report
    if report.server["autovacuum"] != "on":
        report.warnings.append(AUTOVACUUM_OFF)
    app = set(report.tables.get(APP_SCHEMA, []))
    dagster = set(report.tables.get(DAGSTER_SCHEMA, []))
    if not dagster_schema:
        report.problems.append(
            f"schema {DAGSTER_SCHEMA!r} is missing: run `mltrading db init` before Dagster starts"
        )
    for table in APP_TABLES:
        if table not in app:
            report.problems.append(
                f"table {APP_SCHEMA}.{table} is missing: run `mltrading db init`"
            )
    stray = sorted(app & set(DAGSTER_TABLES))
    if stray:
        report.problems.append(
            f"Dagster tables found in {APP_SCHEMA!r} ({', '.join(stray)}): dagster.yaml is not "
            f"using the {DAGSTER_SCHEMA!r} schema"
        )
    if dagster_schema and not dagster & set(DAGSTER_TABLES):
        report.problems.append(
            f"no Dagster tables in {DAGSTER_SCHEMA!r}: the Dagster instance did not load "
            "(check dagster.yaml and DAGSTER_HOME)"
        )
    return report


# Without autovacuum, no table written every hour ever gets planner statistics or a vacuum.
AUTOVACUUM_OFF = (
    "autovacuum is off on this PostgreSQL server: the tables written every hour (bars, "
    "features, Dagster's event log and check executions) never get fresh planner statistics, "
    "and the UI's check-status queries take seconds instead of milliseconds; switch it on "
    "(`autovacuum = on`), or run `VACUUM ANALYZE` after large loads"
)


# A daemon that has not reported for this long has stopped: schedules and sensors are idle.
HEARTBEAT_STALE_AFTER_S = 300


def migration_state(conn: sa.Connection) -> tuple[str | None, str]:
    """(revision of Dagster's schema in the database, newest revision this Dagster knows)."""
    import dagster_postgres.run_storage.run_storage as pg_run_storage
    from alembic.script import ScriptDirectory
    from dagster_postgres.utils import pg_alembic_config

    head = ScriptDirectory.from_config(
        pg_alembic_config(pg_run_storage.__file__)
    ).get_current_head()
    return reports.dagster_migration(conn), head


def check_dagster(report: Report, url: str, instance) -> None:
    """Migrations, daemon heartbeat and schedule state, added to ``report``."""
    import time

    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    try:
        with one_connection(url, application_name="mltrading-doctor") as conn:
            current, head = migration_state(conn)
    except sa.exc.SQLAlchemyError as exc:
        report.problems.append(f"cannot read Dagster's migration state: {exc.__class__.__name__}")
        return
    report.dagster["migration"] = {"database": current, "code": head}
    if current != head:
        report.problems.append(
            f"Dagster storage is at migration {current}, this Dagster expects {head}: "
            "run `dagster instance migrate`"
        )
    heartbeats = instance.get_daemon_heartbeats()
    newest = max((hb.timestamp for hb in heartbeats.values()), default=None)
    report.dagster["daemon_heartbeat_age_s"] = round(time.time() - newest, 1) if newest else None
    if newest is None:
        report.warnings.append(
            "the Dagster daemon has never run here: schedules and sensors start with `mltrading ui`"
        )
    elif time.time() - newest > HEARTBEAT_STALE_AFTER_S:
        report.problems.append(
            f"the Dagster daemon last reported {time.time() - newest:.0f} s ago: it has stopped, "
            "so schedules and sensors are idle"
        )
    check_runs(report, instance)
    states = instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
    report.dagster["schedules"] = {state.name: state.status.value for state in states}
    stopped = [s.name for s in states if s.status == InstigatorStatus.STOPPED]
    if stopped:
        report.warnings.append(f"schedules switched off: {', '.join(sorted(stopped))}")


def check_freshness(report: Report, url: str, now, source: str) -> None:
    """How many active symbols have bars up to the last trading hour."""
    from mltrading_assets.trading_calendar import newest_bar_due

    due = newest_bar_due(now)
    with one_connection(url, application_name="mltrading-doctor") as conn:
        rows = reports.newest_bars(conn, source)
    stale = sorted(s for s, newest in rows if newest is None or newest < due)
    report.freshness = {
        "active_symbols": len(rows),
        "fresh": len(rows) - len(stale),
        "stale": len(stale),
        "stale_examples": stale[:10],
        "bars_due_since": due.isoformat(),
    }
    if stale:
        report.warnings.append(
            f"{len(stale)} of {len(rows)} active symbols have no bar since {due:%Y-%m-%d %H:%M} UTC"
        )


def check_runs(report: Report, instance) -> None:
    """Runs whose process is gone, and pool slots held by runs that ended."""
    from mltrading_assets.lib.dead_runs import dead_runs, slots_held_by_finished_runs

    dead = dead_runs(instance)
    holders = slots_held_by_finished_runs(instance)
    report.dagster["dead_runs"] = [run.run_id for run in dead]
    report.dagster["slots_held_by_finished_runs"] = holders
    for run in dead:
        report.problems.append(
            f"run {run.run_id} ({run.job_name}) is {run.status.value} but its process is gone: "
            "it holds its pool slots and later bar runs wait for it; `mltrading doctor --fix` "
            "marks it failed and frees them"
        )
    if holders:
        report.problems.append(
            f"finished runs still hold pool slots: {', '.join(holders)}; "
            "`mltrading doctor --fix` frees them"
        )


def check_workers(report: Report) -> None:
    """With Celery on: the worker hosts that answer, and any queue a step goes to that no
    worker serves (its steps would wait)."""
    from mltrading_assets.lib import distributed

    if not distributed.enabled():
        return
    wanted = {distributed.queue_for(kind) for kind in distributed.QUEUE_VARIABLES}
    try:
        served = distributed.served_queues()
        consumers = distributed.queue_consumers(wanted)
    except Exception as exc:  # the broker itself is down or refuses us
        report.problems.append(
            f"Celery broker {distributed.redacted_broker()} not reachable: {type(exc).__name__}: "
            f"{exc}"
        )
        return
    report.dagster["workers"] = served
    report.dagster["queue_consumers"] = consumers
    unserved = sorted(queue for queue, count in consumers.items() if count == 0)
    if unserved:
        report.problems.append(
            f"no worker serves queue {', '.join(unserved)}: runs with such steps fail at once "
            f"(`mltrading worker --queues {','.join(unserved)}`)"
        )
    elif len(served) < max(consumers.values(), default=0):
        report.warnings.append(
            f"the broker counts {max(consumers.values())} worker(s) on a queue, "
            f"{len(served)} answered"
        )
