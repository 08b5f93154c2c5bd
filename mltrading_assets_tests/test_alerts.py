"""Alerts reach real receivers (an HTTP webhook, an SMTP server wanting STARTTLS and a
login) once per incident: a failing symbol, an ERROR check, a stale symbol at a pinned
clock, a slow run, a refused model; a reminder later, a "recovered" message after the fix,
and nothing twice when the daemon restarts (the sensors evaluated afresh, as it would)."""

import datetime as dt
import os
import subprocess
import sys
import threading
import time

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from mltrading_assets.db.symbols import add_symbols
from mltrading_assets.db.system_logs import log_model_event
from mltrading_assets.defs.alerts import sensors
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.launching import materialize
from mltrading_assets.lib.partitions import register_partitions
from mltrading_assets.lib.resources import (
    AlertsResource,
    BarSourceResource,
    PostgresResource,
)
from mltrading_assets.names import CHECKS_RECORD_FAILURES, RunTags
from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets_tests.conftest import free_port, run_cli
from mltrading_assets_tests.receivers import MailReceiver, WebhookReceiver
from mltrading_assets_tests.test_dagster_runs import AS_OF, run_config


@pytest.fixture
def receivers():
    slack, webhook, mail = WebhookReceiver(), WebhookReceiver(), MailReceiver(free_port())
    yield slack, webhook, mail
    slack.stop()
    webhook.stop()
    mail.stop()


def alerts_config(receivers, **settings) -> AlertsResource:
    slack, webhook, mail = receivers
    configured = {
        "slack_webhook_url": slack.url,
        "webhook_url": webhook.url,
        "smtp_host": "127.0.0.1",
        "smtp_port": mail.port,
        "smtp_username": MailReceiver.USER,
        "smtp_password": MailReceiver.PASSWORD,
        "email_to": "ops@example.test",
        "ui_url": "http://ui.example.test",
    }
    return AlertsResource(**{**configured, **settings})


def evaluate(sensor, instance, database_url, alerts, cursor=None, as_of=AS_OF):
    """One tick of ``sensor`` as the daemon runs it: fresh resources, the stored cursor."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "database": PostgresResource(url=database_url),
            "source": BarSourceResource(kind="synthetic", as_of=as_of),
            "alerts": alerts,
        },
    )
    result = sensor(context)
    return result, context.cursor


def test_a_failed_run_is_told_once_everywhere_then_reminded_then_recovered(
    instance, db, database_url, inject_faults, receivers
):
    slack, webhook, mail = receivers
    symbols = ["A", "B", "C"]
    register_partitions(instance, symbols)
    inject_faults("B=raise")
    [failed] = materialize(instance, "market_data", symbols, run_config=run_config())
    assert not failed.success
    now = pd.Timestamp.now(tz="UTC")
    alerts = alerts_config(receivers, as_of=now.isoformat())

    slack.fail_next = 3  # every attempt of the first tick: the Slack message is owed
    evaluate(sensors.alert_failed_runs, instance, database_url, alerts)
    assert slack.texts() == []
    [told] = webhook.bodies
    assert told["status"] == "open" and told["severity"] == "ERROR"
    assert "market_data_job: 1 run(s) failed" in told["title"]
    assert "B: RuntimeError: injected failure for B" in told["text"]
    assert f"http://ui.example.test/runs/{failed.run_id}" in told["text"]
    failed_symbols = told["subjects"]["A..C"]["failed_symbols"]
    assert failed_symbols == {"B": "B: RuntimeError: injected failure for B"}
    assert mail.subjects() == ["[mltrading ERROR] market_data_job: 1 run(s) failed"]

    # The next tick delivers what Slack was owed, to Slack only; later ticks, and a restarted
    # daemon (new resources, the incident read back from the database), send nothing.
    for _ in range(3):
        evaluate(sensors.alert_failed_runs, instance, database_url, alerts)
    assert len(slack.texts()) == 1 and "B: RuntimeError: injected failure for B" in slack.texts()[0]
    assert len(webhook.bodies) == 1 and len(mail.messages) == 1

    # The same symbols failing again are the same news; other symbols failing are told at once.
    assert not materialize(instance, "market_data", symbols, run_config=run_config())[0].success
    evaluate(sensors.alert_failed_runs, instance, database_url, alerts)
    register_partitions(instance, ["D"])
    inject_faults("B=raise,D=raise")
    assert not materialize(instance, "market_data", ["D"], run_config=run_config())[0].success
    evaluate(sensors.alert_failed_runs, instance, database_url, alerts)
    assert [b["status"] for b in webhook.bodies] == ["open", "update"]
    assert "D: RuntimeError: injected failure for D" in webhook.bodies[-1]["text"]
    assert webhook.bodies[-1]["title"] == "market_data_job: 2 run(s) failed"

    later = alerts_config(receivers, as_of=(now + dt.timedelta(hours=5)).isoformat())
    evaluate(sensors.alert_failed_runs, instance, database_url, later)
    evaluate(sensors.alert_failed_runs, instance, database_url, later)
    assert [b["status"] for b in webhook.bodies] == ["open", "update", "reminder"]
    assert slack.texts()[-1].startswith("[mltrading ERROR] still: market_data_job")

    inject_faults("")
    for fixed in (symbols, ["D"]):
        assert materialize(instance, "market_data", fixed, run_config=run_config())[0].success
    evaluate(sensors.alert_failed_runs, instance, database_url, later)
    evaluate(sensors.alert_failed_runs, instance, database_url, later)
    assert [b["status"] for b in webhook.bodies] == ["open", "update", "reminder", "recovered"]
    assert mail.subjects()[-1] == "[mltrading ERROR] recovered: market_data_job: 2 run(s) failed"
    assert len(slack.texts()) == len(mail.messages) == 4


def test_an_error_check_names_its_symbols_with_their_numbers_until_they_pass(
    instance, db, database_url, receivers
):
    _, webhook, _ = receivers
    alerts = alerts_config(receivers)
    symbols = ["A", "B", "C"]
    register_partitions(instance, symbols)
    materialize(instance, "market_data", symbols, run_config=run_config())
    # A bar at 10:00 New York is off the hourly grid (9:30, 10:30, …): bars_on_grid, ERROR.
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO public.market_data (symbol, timestamp, source, open, high, low,"
                " close, volume) SELECT s, '2026-11-19 15:00+00', 'synthetic', 10, 11, 9, 10, 1"
                " FROM unnest(CAST(:symbols AS text[])) AS s"
            ),
            {"symbols": ["A", "B"]},
        )
    cursor = None

    def check_and_evaluate(fixed: str | None = None):
        nonlocal cursor
        if fixed:
            with db.begin() as conn:
                conn.execute(
                    sa.text(
                        "DELETE FROM public.market_data WHERE symbol = :s"
                        " AND timestamp = '2026-11-19 15:00+00'"
                    ),
                    {"s": fixed},
                )
        # Once it is open, the hourly runs, which record only the failures, close it.
        tags = {RunTags.CHECKS_RECORD: CHECKS_RECORD_FAILURES} if fixed else None
        materialize(instance, "checks", symbols, tags=tags, run_config=run_config())
        _, cursor = evaluate(sensors.alert_failed_checks, instance, database_url, alerts, cursor)
        return [b for b in webhook.bodies if "bars_on_grid" in b["key"]]

    [told] = check_and_evaluate()
    assert told["title"] == "check bars_on_grid of market_data fails for 2 symbol(s): A, B"
    assert "- A: " in told["text"] and "off_grid_bars=1" in told["text"]
    assert set(told["subjects"]) == {"A", "B"}
    assert len(check_and_evaluate(fixed="A")) == 1  # B still fails: the same incident
    assert [b["status"] for b in check_and_evaluate(fixed="B")] == ["open", "recovered"]


def test_a_stale_symbol_is_named_during_the_session_and_recovers(
    instance, db, database_url, receivers
):
    _, webhook, _ = receivers
    register_partitions(instance, ["A", "B"])
    with db.begin() as conn:
        add_symbols(conn, ["A", "B"])
    # Loaded up to Friday's close; on Monday at 12:10 New York B is refreshed, A is not.
    monday = "2026-11-23T17:10:00Z"
    for symbols, as_of in ((["A", "B"], AS_OF), (["B"], monday)):
        config = {"resources": {"source": {"config": {"kind": "synthetic", "as_of": as_of}}}}
        for asset in ("market_data", "features"):
            assert all(r.success for r in materialize(instance, asset, symbols, run_config=config))

    weekend = alerts_config(receivers, as_of="2026-11-22T17:10:00Z")
    result, _ = evaluate(sensors.alert_stale_data, instance, database_url, weekend, as_of=monday)
    assert "NYSE is closed" in result.skip_message and webhook.bodies == []

    alerts = alerts_config(receivers, as_of=monday)
    evaluate(sensors.alert_stale_data, instance, database_url, alerts, as_of=monday)
    evaluate(sensors.alert_stale_data, instance, database_url, alerts, as_of=monday)
    titles = sorted(b["title"] for b in webhook.bodies)
    assert titles == [
        "feature_engineered_data: 1 symbol(s) more than 2 trading hours old: A",
        "market_data: 1 symbol(s) more than 2 trading hours old: A",
    ]
    assert "A (newest 11-20 15:30)" in webhook.bodies[0]["text"]

    config = {"resources": {"source": {"config": {"kind": "synthetic", "as_of": monday}}}}
    for asset in ("market_data", "features"):
        materialize(instance, asset, ["A"], run_config=config)
    evaluate(sensors.alert_stale_data, instance, database_url, alerts, as_of=monday)
    assert [b["status"] for b in webhook.bodies] == ["open", "open", "recovered", "recovered"]


def test_a_slow_run_is_told_while_it_runs_and_when_it_ends(
    instance, db, database_url, inject_faults, receivers
):
    _, webhook, _ = receivers
    symbols = [f"S{i:02d}" for i in range(16)]
    register_partitions(instance, symbols)
    # No history for the job: the default expectation, 2 s, makes a run of 16 symbols of
    # half a second each on 2 workers (4 s and more) slow.
    alerts = alerts_config(receivers, slow_default_minutes=2 / 60)
    inject_faults("*=slow")
    stop = threading.Event()
    seen_while_running = []

    def watch():
        while not stop.wait(0.5):
            evaluate(sensors.alert_slow_runs, instance, database_url, alerts)
            if webhook.bodies and not seen_while_running:
                seen_while_running.append(instance.get_runs(limit=1)[0].status)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        [run] = materialize(instance, "market_data", symbols, run_config=run_config())
    finally:
        stop.set()
        watcher.join()
    assert seen_while_running == [dg.DagsterRunStatus.STARTED]
    evaluate(sensors.alert_slow_runs, instance, database_url, alerts)
    assert [b["status"] for b in webhook.bodies] == ["open", "recovered"]
    told = webhook.bodies[0]
    assert told["title"] == f"market_data_job run {run.run_id[:8]} (S00..S15) is slow"
    assert "more than 1.5 × the 2 s expected (the default, no history yet)" in told["text"]


def test_a_refused_model_is_told_once(instance, db, database_url, receivers):
    _, webhook, _ = receivers
    relay = MailReceiver(free_port(), plain=True)  # a local relay: no TLS, no login
    alerts = alerts_config(
        receivers, smtp_port=relay.port, smtp_security="none", smtp_username="", smtp_password=""
    )
    with db.begin() as conn:
        log_model_event(conn, "run-1", "REFUSED", "4", "candidate 0.51 ≤ champion 0.52 + 0.002")
    _, cursor = evaluate(sensors.alert_model_decisions, instance, database_url, alerts)
    evaluate(sensors.alert_model_decisions, instance, database_url, alerts, cursor)
    # A daemon that lost the cursor reads the last day again: the message is not repeated.
    evaluate(sensors.alert_model_decisions, instance, database_url, alerts)
    relay.stop()
    [told] = webhook.bodies
    assert told["status"] == "info" and told["title"] == "model version 4: refused"
    assert "candidate 0.51" in told["text"]
    assert relay.subjects() == ["[mltrading INFO] model version 4: refused"]


def test_alerts_test_sends_to_every_destination(database_url, receivers, dagster_home):
    slack, webhook, mail = receivers
    env = {
        **os.environ,
        "MLTRADING_ALERT_SLACK_WEBHOOK_URL": slack.url,
        "MLTRADING_ALERT_WEBHOOK_URL": webhook.url,
        "MLTRADING_ALERT_SMTP_HOST": "127.0.0.1",
        "MLTRADING_ALERT_SMTP_PORT": str(mail.port),
        "MLTRADING_ALERT_SMTP_USERNAME": MailReceiver.USER,
        "MLTRADING_ALERT_SMTP_PASSWORD": MailReceiver.PASSWORD,
        "MLTRADING_ALERT_EMAIL_TO": "ops@example.test",
    }
    done = run_cli(env, "alerts", "test")
    assert "slack: delivered" in done.stdout and "email: delivered" in done.stdout
    assert len(slack.texts()) == len(webhook.bodies) == len(mail.messages) == 1

    env["MLTRADING_ALERT_WEBHOOK_URL"] = "http://127.0.0.1:9/nothing-listens"
    failed = run_cli(env, "alerts", "test", check=False)
    assert failed.returncode == 1
    assert "webhook: NOT delivered" in failed.stdout


def dagster_dev(env: dict, log_path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
        + ["-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log_path.open("a"),
        stderr=subprocess.STDOUT,
    )


def test_through_the_daemon_a_failure_is_told_once_across_a_restart(
    instance, db, tmp_path, inject_faults
):
    """The sensors run in the real daemon, switched on by a configured destination, and the
    daemon's freshness evaluation shows the assets fresh once the hourly work is done."""
    webhook = WebhookReceiver()
    with db.begin() as conn:
        add_symbols(conn, ["NEWA", "NEWB"])
    inject_faults("NEWB=raise")
    env = {
        **os.environ,
        "MLTRADING_SOURCE": "synthetic",
        "MLTRADING_SYNTHETIC_AS_OF": AS_OF,
        "MLTRADING_WORKERS": "2",
        "MLTRADING_ALERT_WEBHOOK_URL": webhook.url,
        # The synthetic bars end at AS_OF, so during a real NYSE session the stale-data
        # sensor (on the real clock here) would report them: not what this test is about.
        # More trading hours than have passed since AS_OF (a session has at most 6.5).
        "MLTRADING_ALERT_STALE_TRADING_HOURS": str(
            7 * len(pd.bdate_range(AS_OF, pd.Timestamp.now(tz="UTC")))
        ),
    }
    log_path = tmp_path / "daemon.log"
    daemon = dagster_dev(env, log_path, free_port())
    try:
        # The bars run fails for NEWB; the features run that follows it fails for NEWB too.
        deadline = time.monotonic() + 240
        while len(webhook.bodies) < 2 and time.monotonic() < deadline:
            assert daemon.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
        titles = sorted(body["title"] for body in webhook.bodies)
        assert titles == ["features_job: 1 run(s) failed", "market_data_job: 1 run(s) failed"]
        assert "NEWB: RuntimeError: injected failure for NEWB" in webhook.bodies[0]["text"]

        # A restarted daemon evaluates the sensor again and sends nothing.
        daemon.terminate()
        daemon.wait(60)
        logged = len(log_path.read_text())
        daemon = dagster_dev(env, log_path, free_port())
        deadline = time.monotonic() + 240
        evaluated = "Sensor alert_failed_runs skipped"
        while evaluated not in log_path.read_text()[logged:] and time.monotonic() < deadline:
            assert daemon.poll() is None, log_path.read_text()[-3000:]
            time.sleep(2)
        assert evaluated in log_path.read_text()[logged:], log_path.read_text()[-3000:]
        assert len(webhook.bodies) == 2

        fresh = instance.get_freshness_state_records([market_data.key])
        assert fresh[market_data.key].freshness_state.value == "PASS"
    finally:
        daemon.terminate()
        daemon.wait(60)
        webhook.stop()


def failing_sensor(instance: dg.DagsterInstance, name: str, failures: int) -> None:
    """``name`` as the daemon records a sensor whose last ``failures`` ticks raised."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import RemoteInstigatorOrigin
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        TickData,
        TickStatus,
    )
    from dagster._utils.error import SerializableErrorInfo

    from mltrading_assets.lib.launching import workspace_origin

    origin = RemoteInstigatorOrigin(workspace_origin("features_job").repository_origin, name)
    state = instance.add_instigator_state(
        InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING)
    )
    for at in range(failures):
        instance.create_tick(
            TickData(
                instigator_origin_id=state.instigator_origin_id,
                instigator_name=name,
                instigator_type=InstigatorType.SENSOR,
                status=TickStatus.FAILURE,
                timestamp=time.time() - 60 * (failures - at),
                selector_id=state.selector_id,
                error=SerializableErrorInfo("KeyError: 'symbol'", [], "KeyError"),
            )
        )


def test_an_old_heartbeat_and_a_sensor_that_keeps_failing_are_named(
    instance, db, database_url, receivers
):
    from dagster._daemon.types import DaemonHeartbeat

    _, webhook, _ = receivers
    instance.wipe_all_schedules()  # ticks a daemon of an earlier test recorded
    now = time.time()
    for daemon in instance.get_required_daemon_types():
        age = 600 if daemon == "SCHEDULER" else 5
        instance.add_daemon_heartbeat(DaemonHeartbeat(now - age, daemon, "test", errors=[]))
    failing_sensor(instance, "features_after_market_data", failures=3)
    failing_sensor(instance, "log_failed_runs", failures=2)  # not yet "keeps failing"
    alerts = alerts_config(receivers, as_of=pd.Timestamp(now, unit="s", tz="UTC").isoformat())
    try:
        evaluate(sensors.alert_daemon_health, instance, database_url, alerts)
    finally:
        instance.wipe_daemon_heartbeats()
        instance.wipe_all_schedules()
    assert sorted(b["title"] for b in webhook.bodies) == [
        "Dagster daemon SCHEDULER: last heartbeat 10 min ago",
        "sensor features_after_market_data: the last 3 ticks failed",
    ]
    assert any("KeyError: 'symbol'" in b["text"] for b in webhook.bodies)
