"""``mltrading alerts``: try the configured destinations, and list the open incidents."""

import os
import socket

import click

from mltrading_assets.cli import environment as env


def alerts_from_environment():
    """The alert settings as the sensors see them, read here from the environment (a
    resource bound to ``EnvVar``s resolves them only inside Dagster)."""
    from mltrading_assets.defs.alerts.resources import ENVIRONMENT
    from mltrading_assets.lib.resources import AlertsResource

    return AlertsResource(
        **{
            field: type(default)(os.environ[variable])
            for field, (variable, default) in ENVIRONMENT.items()
            if variable in os.environ
        }
    )


@click.group()
def alerts() -> None:
    """Alerts: where they go (MLTRADING_ALERT_* variables) and what is open now."""


@alerts.command("test")
def send_test() -> None:
    """Send one test message to every configured destination; exit 1 if one fails."""
    from mltrading_assets.alerts.delivery import Message

    destinations = alerts_from_environment().destinations()
    names = destinations.names()
    if not names:
        raise click.ClickException(
            "no destination configured: set MLTRADING_ALERT_SLACK_WEBHOOK_URL, "
            "MLTRADING_ALERT_WEBHOOK_URL or MLTRADING_ALERT_SMTP_HOST with "
            "MLTRADING_ALERT_EMAIL_TO"
        )
    message = Message(
        key="test",
        kind="test",
        severity="INFO",
        status="info",
        title=f"test alert from mltrading on {socket.gethostname()}",
        body="If you can read this, alerts reach you here.",
    )
    errors = destinations.send(message)
    for name in names:
        outcome = f"NOT delivered: {errors[name]}" if name in errors else "delivered"
        click.echo(f"{name}: {outcome}")
    if errors:
        raise SystemExit(1)


@alerts.command("list")
def list_open() -> None:
    """The incidents open now, oldest first, and any message still owed."""
    import sqlalchemy as sa

    from mltrading_assets.db.tables import alert_incidents as table

    with env.connection(env.ready_environment()) as conn:
        rows = conn.execute(
            sa.select(table)
            .where(table.c.resolved_at.is_(None) | table.c.pending.is_not(None))
            .order_by(table.c.opened_at)
        ).all()
    if not rows:
        click.echo("no open incidents")
    for row in rows:
        owed = f" (message owed: {row.pending})" if row.pending else ""
        click.echo(f"{row.opened_at:%Y-%m-%d %H:%M} {row.severity:<5} {row.title}{owed}")
