"""Where alerts go, bound to the environment (every destination off until its variable is set)."""

import dagster as dg

from mltrading_assets.lib.resources import AlertsResource, env_or

ENVIRONMENT = {
    "slack_webhook_url": ("MLTRADING_ALERT_SLACK_WEBHOOK_URL", ""),
    "webhook_url": ("MLTRADING_ALERT_WEBHOOK_URL", ""),
    "smtp_host": ("MLTRADING_ALERT_SMTP_HOST", ""),
    "smtp_port": ("MLTRADING_ALERT_SMTP_PORT", 587),
    "smtp_security": ("MLTRADING_ALERT_SMTP_SECURITY", "starttls"),
    "smtp_username": ("MLTRADING_ALERT_SMTP_USERNAME", ""),
    "smtp_password": ("MLTRADING_ALERT_SMTP_PASSWORD", ""),
    "email_from": ("MLTRADING_ALERT_EMAIL_FROM", "mltrading@localhost"),
    "email_to": ("MLTRADING_ALERT_EMAIL_TO", ""),
    "reminder_hours": ("MLTRADING_ALERT_REMINDER_HOURS", 4.0),
    "stale_after_trading_hours": ("MLTRADING_ALERT_STALE_TRADING_HOURS", 2.0),
    "ui_url": ("MLTRADING_UI_URL", "http://127.0.0.1:3000"),
}


def alerts_resource() -> AlertsResource:
    return AlertsResource(
        **{field: env_or(variable, default) for field, (variable, default) in ENVIRONMENT.items()}
    )


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"alerts": alerts_resource()})
