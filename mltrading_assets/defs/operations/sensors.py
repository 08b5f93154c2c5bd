"""Every finished run leaves a row in ``public.system_logs``."""

import datetime as dt

import dagster as dg

from mltrading_assets.db.system_logs import log_run
from mltrading_assets.lib.dead_runs import reap_dead_runs
from mltrading_assets.lib.ranged_runs import partitions_label
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.names import MetadataKeys, RunTags


def rebased_symbols(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Which symbols of the run had their history re-based (a split), and why: read from
    their materializations, in a run whose step named them (``RunTags.REBASED``). Reading
    every materialization of every finished run for a note most runs never have was two
    thirds of the code server's CPU during an hourly tick."""
    if RunTags.REBASED not in run.tags:
        return None
    run_id = run.run_id
    notes = []
    cursor = None
    while True:
        page = instance.get_records_for_run(
            run_id,
            cursor=cursor,
            of_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
            limit=1000,
        )
        for record in page.records:
            materialization = record.event_log_entry.asset_materialization
            rebased = (
                materialization.metadata.get(MetadataKeys.REBASED) if materialization else None
            )
            if rebased is not None:
                notes.append(f"{materialization.partition}: {rebased.value}")
        if not page.has_more:
            break
        cursor = page.cursor
    return "rebased " + "; ".join(notes) if notes else None


def record_finished_run(
    instance: dg.DagsterInstance,
    database: PostgresResource,
    run: dg.DagsterRun,
    status: str,
    error: str | None = None,
) -> bool:
    stats = instance.get_run_stats(run.run_id)
    notes = rebased_symbols(instance, run)

    def when(timestamp: float | None) -> dt.datetime | None:
        return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None

    with database.connection(begin=True) as conn:
        return log_run(
            conn,
            run_id=run.run_id,
            job_name=run.job_name,
            partitions=partitions_label(run),
            status=status,
            started_at=when(stats.start_time),
            ended_at=when(stats.end_time),
            error=error,
            notes=notes,
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


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks runs whose process is gone (a killed `mltrading materialize`) as failed and "
        "gives back the pool slots finished runs still hold."
    ),
)
def dead_runs_sensor(context: dg.SensorEvaluationContext):
    reaped = reap_dead_runs(context.instance)
    for dead in reaped.dead:
        context.log.warning(f"run {dead.run_id} marked failed: process {dead.pid} is gone")
    if not (reaped.dead or reaped.slots_freed_for):
        return dg.SkipReason("no dead runs, no slots held by finished runs")
    return dg.SkipReason(
        f"marked {len(reaped.dead)} dead run(s) failed; freed the slots of "
        f"{len(reaped.slots_freed_for)} finished run(s)"
    )
