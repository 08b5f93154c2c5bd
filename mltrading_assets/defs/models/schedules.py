import dagster as dg

from mltrading_assets.defs.models.jobs import model_training_job
from mltrading_assets.lib.schedules import default_schedule_status
from mltrading_assets.trading_calendar import NEW_YORK

# The old system's nightly retrain (0 2 * * *), now gated by the champion comparison.
model_training_schedule = dg.ScheduleDefinition(
    name="model_training_schedule",
    job=model_training_job,
    cron_schedule="0 2 * * *",
    execution_timezone=NEW_YORK,
    default_status=default_schedule_status(),
    description="Retrain daily at 02:00 New York; the champion changes only past the gate.",
)
