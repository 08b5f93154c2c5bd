"""Alerts, one sensor per kind of trouble, so each shows, ticks and can be switched off in
the UI. Each sensor works out what is wrong now; ``alerts.reconcile`` turns that into one
message per incident, a reminder, and a "recovered" message, whatever the number of ticks
or daemon restarts in between. The sensors start running once a destination is configured
(``MLTRADING_ALERT_*``); started by hand without one, they track incidents in their ticks."""

import datetime as dt
import os

import dagster as dg

from mltrading_assets.alerts import reconcile, record_events
from mltrading_assets.alerts.incidents import Sent, open_incidents
from mltrading_assets.lib import alert_conditions as conditions
from mltrading_assets.lib.resources import AlertsResource, BarSourceResource, PostgresResource

DESTINATION_VARIABLES = (
    "MLTRADING_ALERT_SLACK_WEBHOOK_URL",
    "MLTRADING_ALERT_WEBHOOK_URL",
    "MLTRADING_ALERT_SMTP_HOST",
)
# Runs that failed longer ago than this, with no later run of the same symbols, drop out.
LOOKBACK = dt.timedelta(hours=26)


def _default_status() -> dg.DefaultSensorStatus:
    if any(os.environ.get(name) for name in DESTINATION_VARIABLES):
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


def _outcome(context: dg.SensorEvaluationContext, sent: list[Sent], open_count: int):
    for item in sent:
        context.log.info(f"{item.message.status}: {item.message.headline}")
        for destination, error in item.errors.items():
            context.log.warning(f"not delivered to {destination} (retried next tick): {error}")
    delivered = sum(1 for item in sent if not item.errors)
    return dg.SkipReason(
        f"{open_count} open incident(s); {delivered} message(s) sent"
        + (f", {len(sent) - delivered} owed" if delivered < len(sent) else "")
    )


def _reconcile(
    context, database: PostgresResource, alerts: AlertsResource, kind, active, **options
):
    with database.connection() as conn:
        sent = reconcile(
            conn,
            kind,
            active,
            alerts.destinations(),
            alerts.now().to_pydatetime(),
            dt.timedelta(hours=alerts.reminder_hours),
            **options,
        )
    return _outcome(context, sent, len(active))


def alert_sensor(name: str, description: str, interval: int = 30):
    return dg.sensor(
        name=name,
        minimum_interval_seconds=interval,
        default_status=_default_status(),
        description=description,
    )


@alert_sensor(
    "alert_failed_runs",
    "A run failed: its job, the symbols that failed with their reasons, a link to the run; "
    "recovered once the same symbols' next run succeeds.",
)
def alert_failed_runs(context, database: PostgresResource, alerts: AlertsResource):
    active = conditions.failed_runs(context.instance, alerts.now(), LOOKBACK, alerts.run_link)
    # Every failed run is news: one that fails while its job's incident is open says so.
    return _reconcile(context, database, alerts, "run_failed", active, update_on_new_subjects=True)


@alert_sensor(
    "alert_failed_checks",
    "An ERROR-severity asset check failed: which check, which symbols, their numbers; "
    "recovered once each of those symbols passes it again.",
)
def alert_failed_checks(context, database: PostgresResource, alerts: AlertsResource):
    with database.connection() as conn:
        state = open_incidents(conn, "check_failed")
    cursor = int(context.cursor) if context.cursor else None
    since = alerts.now() - LOOKBACK
    active, cursor = conditions.failed_checks(context.instance, cursor, state, since)
    outcome = _reconcile(context, database, alerts, "check_failed", active)
    if cursor is not None:
        context.update_cursor(str(cursor))
    return outcome


@alert_sensor(
    "alert_slow_runs",
    "A run still going past 1.5 × its expected duration (learned from the job's recent "
    "runs), raised while it runs.",
)
def alert_slow_runs(context, database: PostgresResource, alerts: AlertsResource):
    active = conditions.slow_runs(
        context.instance,
        alerts.now(),
        alerts.slow_factor,
        alerts.slow_default_minutes * 60,
        alerts.run_link,
    )
    return _reconcile(context, database, alerts, "slow_run", active)


@alert_sensor(
    "alert_stale_data",
    "During NYSE sessions: active symbols whose newest bar or feature row is more than "
    "the set number of trading hours old, named.",
    interval=60,
)
def alert_stale_data(
    context, database: PostgresResource, source: BarSourceResource, alerts: AlertsResource
):
    with database.connection() as conn:
        active = conditions.stale_symbols(
            conn, source.build().name, alerts.now(), alerts.stale_after_trading_hours
        )
    if active is None:
        return dg.SkipReason("NYSE is closed: nothing is due, open incidents stay as they are")
    return _reconcile(context, database, alerts, "stale", active)


@alert_sensor(
    "alert_daemon_health",
    "A Dagster daemon's heartbeat is old, or a sensor or schedule failed its last 3 ticks.",
    interval=60,
)
def alert_daemon_health(context, database: PostgresResource, alerts: AlertsResource):
    active = conditions.daemon_problems(context.instance, alerts.now())
    return _reconcile(context, database, alerts, "daemon", active)


@alert_sensor(
    "alert_model_decisions",
    "For information: a model promoted, refused by the gate, or rolled back, with the reason.",
)
def alert_model_decisions(context, database: PostgresResource, alerts: AlertsResource):
    after = int(context.cursor) if context.cursor else None
    with database.connection() as conn:
        events, after = conditions.model_decisions(conn, after, alerts.now(), LOOKBACK)
        sent = record_events(
            conn, "model", events, alerts.destinations(), alerts.now().to_pydatetime()
        )
    if after is not None:
        context.update_cursor(str(after))
    return _outcome(context, sent, 0)
