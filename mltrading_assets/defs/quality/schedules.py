import dagster as dg
import pandas as pd

from mltrading_assets.defs.market_data.schedules import active_symbols_of, market_data_requests
from mltrading_assets.defs.quality.jobs import quality_checks_job
from mltrading_assets.defs.resources import PostgresResource
from mltrading_assets.lib.schedule_status import default_schedule_status
from mltrading_assets.trading_calendar import NEW_YORK


@dg.schedule(
    job=quality_checks_job,
    cron_schedule="30 9-16 * * 1-5",
    execution_timezone=NEW_YORK,
    default_status=default_schedule_status(),
    description="Data-quality checks of every active symbol, half past each market hour.",
)
def quality_checks_schedule(context: dg.ScheduleEvaluationContext, database: PostgresResource):
    tick = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC")
    return market_data_requests(
        context.instance, active_symbols_of(database), tick, prefix="checks"
    )
