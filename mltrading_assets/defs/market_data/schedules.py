"""Bars every market hour (America/New_York), mirroring the cron of the system we replace.

Every tick covers all active symbols in a few ranged runs (not one run per symbol), with
run keys derived from the tick so a re-evaluated tick never launches twice.
"""

import dagster as dg
import pandas as pd

from mltrading_assets.db.symbols import active_symbols
from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.defs.resources import PostgresResource
from mltrading_assets.lib.ranged_runs import symbol_range_requests
from mltrading_assets.lib.schedule_status import default_schedule_status
from mltrading_assets.trading_calendar import NEW_YORK, market_hours_skip_reason

TICK_TAG = "mltrading/tick"


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


def active_symbols_of(database: PostgresResource) -> list[str]:
    with database.connection() as conn:
        return active_symbols(conn)


@dg.schedule(
    job=market_data_job,
    cron_schedule="0 9-16 * * 1-5",
    execution_timezone=NEW_YORK,
    default_status=default_schedule_status(),
    description="Hourly bars for every active symbol during NYSE hours.",
)
def market_data_schedule(context: dg.ScheduleEvaluationContext, database: PostgresResource):
    tick = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC")
    return market_data_requests(context.instance, active_symbols_of(database), tick)
