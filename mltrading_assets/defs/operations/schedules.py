import dagster as dg

from mltrading_assets.defs.operations.jobs import backup_job, retention_job
from mltrading_assets.lib.schedules import default_schedule_status
from mltrading_assets.trading_calendar import NEW_YORK

retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="0 3 * * *",
    execution_timezone=NEW_YORK,
    default_status=default_schedule_status(),
    description="Nightly clean-up of run history older than 30 days.",
)

backup_schedule = dg.ScheduleDefinition(
    job=backup_job,
    cron_schedule="30 2 * * *",
    execution_timezone=NEW_YORK,
    # Off until someone decides where backups go and switches it on in the UI.
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly backup of every schema and the model files (off by default).",
)
