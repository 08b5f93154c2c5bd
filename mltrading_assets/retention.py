"""Run-history retention: delete old Dagster runs (and with them their event logs) without
losing the latest materialization of any partition, which deleting its run would erase."""

import datetime as dt

import dagster as dg

from mltrading_assets.assets import feature_engineered_data, market_data
from mltrading_assets.market_calendar import NEW_YORK

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def runs_holding_latest_materializations(
    instance: dg.DagsterInstance, assets: list[dg.AssetKey]
) -> set[str]:
    """Run ids that produced the newest materialization of some partition of ``assets``."""
    from dagster._core.event_api import AssetRecordsFilter
    from dagster._core.events import DagsterEventType

    keep: set[str] = set()
    for key in assets:
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION
        )
        ids = list(latest.values())
        for start in range(0, len(ids), 500):
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, storage_ids=ids[start : start + 500]),
                limit=500,
            ).records
            keep.update(record.run_id for record in records)
    return keep


def expired_runs(
    instance: dg.DagsterInstance, max_age_days: int, now: dt.datetime | None = None
) -> list[str]:
    """Finished runs older than ``max_age_days`` that no partition's latest state depends on."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=max_age_days)
    old = instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED, updated_before=cutoff))
    keep = runs_holding_latest_materializations(
        instance, [market_data.key, feature_engineered_data.key]
    )
    return [record.dagster_run.run_id for record in old if record.dagster_run.run_id not in keep]


class RetentionConfig(dg.Config):
    max_age_days: int = 30


@dg.op(
    description="Delete finished runs older than max_age_days, keeping the runs that hold "
    "the latest materialization of any partition."
)
def delete_expired_runs(context: dg.OpExecutionContext, config: RetentionConfig) -> None:
    run_ids = expired_runs(context.instance, config.max_age_days)
    for run_id in run_ids:
        if run_id != context.run_id:
            context.instance.delete_run(run_id)
    context.log.info(f"deleted {len(run_ids)} runs older than {config.max_age_days} days")


@dg.job(description="Delete old run history (default: older than 30 days).")
def retention_job() -> None:
    delete_expired_runs()


retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="0 3 * * *",
    execution_timezone=NEW_YORK,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly clean-up of run history older than 30 days.",
)
