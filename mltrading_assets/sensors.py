"""Sensors: features follow the bars they depend on, and the symbol universe grows itself.

Features are triggered by the completion of the market_data run whose bars they use, never
by the clock alone: a run-status sensor (not declarative automation) because it reuses the
exact symbol range of the data run in one features run, costs one query per finished run,
and works the same for scheduled runs, backfills and runs launched from the UI.
"""

import datetime as dt

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.assets import market_data
from mltrading_assets.db.system_logs import log_run
from mltrading_assets.db.tables import stock_info
from mltrading_assets.jobs import features_job, market_data_job
from mltrading_assets.partitions import contiguous_ranges, range_tags, symbol_partitions
from mltrading_assets.resources import PostgresResource
from mltrading_assets.run_links import features_request_after, followed_already

NEW_SYMBOLS_TAG = "mltrading/new_symbols"


def _follow(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    # Runs of market_data_job carry no asset selection; UI launches and backfills do.
    if run.job_name != market_data_job.name and market_data.key not in (run.asset_selection or ()):
        return dg.SkipReason(f"run {run.run_id} did not materialize market_data")
    if followed_already(context.instance, run):
        return dg.SkipReason(f"features for run {run.run_id} were already requested")
    return features_request_after(run)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=features_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Compute features as soon as a market_data run has written its bars.",
)
def features_after_market_data(context: dg.RunStatusSensorContext):
    return _follow(context)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    request_job=features_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "A partly failed market_data run still wrote the bars of its good symbols: "
        "compute their features too."
    ),
)
def features_after_failed_market_data(context: dg.RunStatusSensorContext):
    return _follow(context)


def symbols_changed_since(conn: sa.Connection, cursor: str) -> pd.DataFrame:
    """Active symbols added or re-activated after ``cursor`` (ISO time), in order added."""
    rows = conn.execute(
        sa.select(stock_info.c.symbol, stock_info.c.updated_at)
        .where(stock_info.c.active, stock_info.c.updated_at > sa.literal(pd.Timestamp(cursor)))
        .order_by(stock_info.c.added_at, stock_info.c.symbol)
    ).all()
    return pd.DataFrame(rows, columns=["symbol", "updated_at"])


def universe_result(
    instance: dg.DagsterInstance, changed: pd.DataFrame, cursor: str
) -> dg.SensorResult | dg.SkipReason:
    if changed.empty:
        return dg.SkipReason("no symbols added or re-activated")
    symbols = changed["symbol"].tolist()
    new_cursor = pd.Timestamp(changed["updated_at"].max()).isoformat()
    existing = instance.get_dynamic_partitions(symbol_partitions.name)
    registered = set(existing)
    new_partitions = [s for s in symbols if s not in registered]
    # Only symbols without any bars yet need their history loaded.
    loaded = instance.get_materialized_partitions(market_data.key)
    to_load = [s for s in symbols if s not in loaded]
    ordered = existing + new_partitions
    requests = [
        dg.RunRequest(
            run_key=f"history:{new_cursor}:{first}..{last}",
            job_name=market_data_job.name,
            tags={**range_tags(first, last), NEW_SYMBOLS_TAG: "true"},
        )
        for first, last in contiguous_ranges(ordered, to_load)
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [symbol_partitions.build_add_request(new_partitions)] if new_partitions else []
        ),
        cursor=new_cursor,
    )


@dg.sensor(
    job=market_data_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches stock_info: active symbols become partitions, and new ones get their "
        "history loaded (features follow)."
    ),
)
def symbol_universe_sensor(context: dg.SensorEvaluationContext, database: PostgresResource):
    cursor = context.cursor or "1970-01-01T00:00:00+00:00"
    with database.connection() as conn:
        changed = symbols_changed_since(conn, cursor)
    return universe_result(context.instance, changed, cursor)


def _partitions_label(run: dg.DagsterRun) -> str | None:
    first = run.tags.get("dagster/asset_partition_range_start")
    if first:
        return f"{first}..{run.tags['dagster/asset_partition_range_end']}"
    return run.tags.get("dagster/partition")


def record_finished_run(
    instance: dg.DagsterInstance,
    database: PostgresResource,
    run: dg.DagsterRun,
    status: str,
    error: str | None = None,
) -> bool:
    stats = instance.get_run_stats(run.run_id)

    def when(timestamp: float | None) -> dt.datetime | None:
        return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None

    with database.connection(begin=True) as conn:
        return log_run(
            conn,
            run_id=run.run_id,
            job_name=run.job_name,
            partitions=_partitions_label(run),
            status=status,
            started_at=when(stats.start_time),
            ended_at=when(stats.end_time),
            error=error,
        )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes a row to public.system_logs for every successful run.",
)
def log_successful_runs(context: dg.RunStatusSensorContext, database: PostgresResource):
    record_finished_run(context.instance, database, context.dagster_run, "SUCCESS")


@dg.run_failure_sensor(
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes a row to public.system_logs, with the error, for every failed run.",
)
def log_failed_runs(context: dg.RunFailureSensorContext, database: PostgresResource):
    step_errors = [
        event.event_specific_data.error.message.strip()
        for event in context.get_step_failure_events()
        if event.event_specific_data and event.event_specific_data.error
    ]
    error = " | ".join(step_errors) or (context.failure_event.message or "run failed")
    record_finished_run(context.instance, database, context.dagster_run, "FAILURE", error)
