"""Features at :05 of every market hour, for the data runs of that hour that have finished;
the ones still running are followed by ``features_after_market_data`` the moment they
finish (sensors.py), so features never compute on bars still being written."""

import dagster as dg
import pandas as pd

from mltrading_assets.defs.features.jobs import features_job, features_requests_after
from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.lib.follow_up import followed_already
from mltrading_assets.lib.schedules import Requests, market_hours_schedule
from mltrading_assets.names import RunTags
from mltrading_assets.trading_calendar import market_hours_skip_reason


def features_requests(instance: dg.DagsterInstance, tick: pd.Timestamp) -> Requests:
    data_tick = tick.floor("h")
    reason = market_hours_skip_reason(data_tick)
    if reason:
        return dg.SkipReason(reason)
    stamp = data_tick.isoformat()
    data_runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=market_data_job.name, tags={RunTags.TICK: stamp})
    )
    if not data_runs:
        return dg.SkipReason(f"no market_data runs for the {stamp} tick")
    finished = [run for run in data_runs if run.is_finished]
    requests = [
        request
        for run in finished
        if not followed_already(instance, run, RunTags.FEATURES_AFTER)
        for request in features_requests_after(instance, run)
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


features_schedule = market_hours_schedule(
    name="features_schedule",
    job=features_job,
    cron_schedule="5 9-16 * * 1-5",
    description="Features for the symbols whose bars of this hour are in.",
    requests=lambda context, tick: features_requests(context.instance, tick),
)
