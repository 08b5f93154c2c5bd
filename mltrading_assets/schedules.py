"""Market-hours schedules (America/New_York), mirroring the cron of the system we replace.

Every tick covers all active symbols in a few ranged runs (not one run per symbol), with
run keys derived from the tick so a re-evaluated tick never launches twice. Features at :05
start only for data runs of that hour that have finished; the ones still running are
followed by ``features_after_market_data`` the moment they finish (see sensors.py).
"""

import dagster as dg
import pandas as pd

from mltrading_assets.db.symbols import active_symbols
from mltrading_assets.jobs import features_job, market_data_job, quality_checks_job
from mltrading_assets.market_calendar import NEW_YORK, market_hours_skip_reason
from mltrading_assets.partitions import SYMBOLS_PER_RUN, contiguous_ranges, range_tags
from mltrading_assets.resources import PostgresResource
from mltrading_assets.run_links import features_request_after, followed_already

TICK_TAG = "mltrading/tick"


def symbol_range_requests(
    ordered_partitions: list[str], symbols: list[str], run_key_prefix: str, tags: dict[str, str]
) -> list[dg.RunRequest]:
    """Ranged run requests covering ``symbols`` (in partition order), a few hundred per run."""
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{first}..{last}",
            tags={**range_tags(first, last), **tags},
        )
        for first, last in contiguous_ranges(ordered_partitions, symbols, SYMBOLS_PER_RUN)
    ]


def market_data_requests(
    instance: dg.DagsterInstance, active: list[str], tick: pd.Timestamp, prefix: str = "market_data"
) -> dg.SkipReason | list[dg.RunRequest]:
    reason = market_hours_skip_reason(tick)
    if reason:
        return dg.SkipReason(reason)
    ordered = instance.get_dynamic_partitions("symbols")
    registered = set(ordered)
    symbols = [s for s in active if s in registered]
    if not symbols:
        return dg.SkipReason("no active symbols: add some with `mltrading symbols add`")
    stamp = tick.isoformat()
    return symbol_range_requests(ordered, symbols, f"{prefix}:{stamp}", {TICK_TAG: stamp})


def _active(database: PostgresResource) -> list[str]:
    with database.connection() as conn:
        return active_symbols(conn)


@dg.schedule(
    job=market_data_job,
    cron_schedule="0 9-16 * * 1-5",
    execution_timezone=NEW_YORK,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly bars for every active symbol during NYSE hours.",
)
def market_data_schedule(context: dg.ScheduleEvaluationContext, database: PostgresResource):
    tick = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC")
    return market_data_requests(context.instance, _active(database), tick)


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
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Features for the symbols whose bars of this hour are in.",
)
def features_schedule(context: dg.ScheduleEvaluationContext):
    tick = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC")
    return features_requests(context.instance, tick)


@dg.schedule(
    job=quality_checks_job,
    cron_schedule="30 9-16 * * 1-5",
    execution_timezone=NEW_YORK,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Data-quality checks of every active symbol, half past each market hour.",
)
def quality_checks_schedule(context: dg.ScheduleEvaluationContext, database: PostgresResource):
    tick = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC")
    return market_data_requests(context.instance, _active(database), tick, prefix="checks")
