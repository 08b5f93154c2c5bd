"""Features at :05 of every market hour, for the data runs of that hour that have finished;
the ones still running are followed by ``features_after_market_data`` the moment they
finish (sensors.py), so features never compute on bars still being written."""

import dagster as dg
import pandas as pd

from mltrading_assets.defs.features.follow import features_request_after, followed_already
from mltrading_assets.defs.features.jobs import features_job
from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.defs.market_data.schedules import TICK_TAG
from mltrading_assets.lib.schedule_status import default_schedule_status
from mltrading_assets.trading_calendar import NEW_YORK, market_hours_skip_reason


def features_requests(
    instance: dg.DagsterInstance, tick: pd.Timestamp
) -> dg.SkipReason | list[dg.RunRequest]:
    data_tick = tick.floor("h")
    reason = market_hours_skip_reason(data_tick)
    if reason:
        return dg.SkipReason(reason)
    stamp = data_tick.isoformat()
    data_runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=market_data_job.name, tags={TICK_TAG: stamp})
    )
    if not data_runs:
        return dg.SkipReason(f"no market_data runs for the {stamp} tick")
    finished = [run for run in data_runs if run.is_finished]
    requests = [
        features_request_after(run) for run in finished if not followed_already(instance, run)
    ]
    if not requests:
        waiting = len(data_runs) - len(finished)
        return dg.SkipReason(
            f"{waiting} market_data run(s) of {stamp} still running: their features start "
            "when they finish (sensor features_after_market_data)"
            if waiting
            else f"features for the {stamp} tick were already requested"
        )
    return requests


@dg.schedule(
    job=features_job,
    cron_schedule="5 9-16 * * 1-5",
    execution_timezone=NEW_YORK,
    default_status=default_schedule_status(),
    description="Features for the symbols whose bars of this hour are in.",
)
def features_schedule(context: dg.ScheduleEvaluationContext):
    tick = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC")
    return features_requests(context.instance, tick)
