"""Schedules: on by default unless switched off, and on the market-hours clock (New York).

Every tick covers all active symbols in a few ranged runs (not one run per symbol), with run
keys derived from the tick, so a re-evaluated tick never launches twice.
"""

import datetime as dt
import os
from collections.abc import Callable

import dagster as dg
import pandas as pd

from mltrading_assets.lib.partitions import ActivePartitions, active_partitions
from mltrading_assets.lib.ranged_runs import symbol_range_requests
from mltrading_assets.names import CHECKS_RECORD_FAILURES, RunTags
from mltrading_assets.trading_calendar import NEW_YORK, market_hours_skip_reason

Requests = dg.SkipReason | list[dg.RunRequest]


def market_hours_freshness(minute: int) -> dg.FreshnessPolicy:
    """Fresh when the asset was materialized in the half hour before ``minute`` past each
    market hour (weekdays 9-16 New York), the hour its schedule serves. Dagster judges the
    asset by its newest materialization of any partition, so this says the hourly runs are
    happening; whether every symbol is fresh is the freshness check and the stale-data
    alert. A cron knows no holidays: on one, the asset shows overdue until the next session."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"{minute} 9-16 * * 1-5",
        lower_bound_delta=dt.timedelta(minutes=30),
        timezone=NEW_YORK,
    )


def default_schedule_status() -> dg.DefaultScheduleStatus:
    """RUNNING unless ``MLTRADING_SCHEDULES=off`` (a laptop that only wants the UI, the load
    benchmark that plays ticks on its own clock). Only the default: a schedule turned on or
    off in the UI stays so."""
    if os.environ.get("MLTRADING_SCHEDULES", "on").lower() == "off":
        return dg.DefaultScheduleStatus.STOPPED
    return dg.DefaultScheduleStatus.RUNNING


def market_hours_schedule(
    *,
    name: str,
    job,
    cron_schedule: str,
    description: str,
    requests: Callable[[dg.ScheduleEvaluationContext, pd.Timestamp], Requests],
    resources: set[str] | None = None,
) -> dg.ScheduleDefinition:
    """A New York schedule whose ``requests`` get the tick in UTC; the tick itself decides
    whether NYSE is open (holidays and early closes are not in a cron)."""

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=NEW_YORK,
        default_status=default_schedule_status(),
        description=description,
        required_resource_keys=resources,
    )
    def _schedule(context: dg.ScheduleEvaluationContext, **_resources):
        # Dagster passes the required resources as arguments too; ``requests`` reads them
        # from the context.
        return requests(context, pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC"))

    return _schedule


def tick_requests(
    partitions: ActivePartitions,
    tick: pd.Timestamp,
    prefix: str,
    *,
    market_hour: pd.Timestamp | None = None,
    tags: dict[str, str] | None = None,
) -> Requests:
    """Ranged run requests over the active symbols for ``tick``, tagged with it (and
    ``tags``); a reason to skip when NYSE is closed in the market hour the tick serves
    (``market_hour``, by default the tick itself) or there is nothing to do."""
    reason = market_hours_skip_reason(tick if market_hour is None else market_hour)
    if reason:
        return dg.SkipReason(reason)
    if not partitions.symbols:
        return dg.SkipReason("no active symbols: add some with `mltrading symbols add`")
    stamp = tick.isoformat()
    return symbol_range_requests(
        partitions.ordered,
        partitions.symbols,
        f"{prefix}:{stamp}",
        {RunTags.TICK: stamp, **(tags or {})},
    )


def check_tick_requests(partitions: ActivePartitions, tick: pd.Timestamp, prefix: str) -> Requests:
    """The quality checks' runs at ``tick``, half past a market hour, over the bars and
    features that hour's tick stored (the one half an hour after the close included).

    A scheduled run records a per-symbol evaluation only for the symbols that fail, and
    each check's summary for the run (symbols checked, which failed). Dagster clears a
    partition's check status at its next materialization, so a passing evaluation said
    little for long, and recording every symbol's eight verdicts wrote ~13 MB per 1,000
    symbols and run to the event log (each too small for PostgreSQL to compress). A run
    launched from the UI records every symbol."""
    return tick_requests(
        partitions,
        tick,
        prefix,
        market_hour=tick.floor("h"),
        tags={RunTags.CHECKS_RECORD: CHECKS_RECORD_FAILURES},
    )


def active_symbols_schedule(
    *,
    name: str,
    job,
    cron_schedule: str,
    description: str,
    run_key_prefix: str,
    requests: Callable[[ActivePartitions, pd.Timestamp, str], Requests] = tick_requests,
) -> dg.ScheduleDefinition:
    """A market-hours schedule whose every tick covers all active symbols in ranged runs."""
    return market_hours_schedule(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        description=description,
        requests=lambda context, tick: requests(
            active_partitions(context.instance, context.resources.database), tick, run_key_prefix
        ),
        resources={"database"},
    )
