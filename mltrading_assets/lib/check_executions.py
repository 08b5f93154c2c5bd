"""What Dagster's storage needs to show our per-symbol check executions right: the
materialization each evaluation judged, and planned executions that will never run removed.

An evaluation logged with ``log_check_evaluations`` names no target materialization (Dagster
finds it only for the ``AssetCheckResult`` of a single-partition run), and Dagster shows a
partition's check status only while its evaluation targets the partition's newest
materialization: without one, every symbol's status stayed blank, failures included.
``latest_materializations`` finds them as Dagster does for a single partition (the newest
materialization of each), for all of a run's symbols in two statements (dagster 1.13.27's
event log table; test_an_hourly_check_run_records_the_failures_and_keeps_each_symbols_last_status
pins the statuses).

A run that materializes an asset from the UI plans one execution of each of the asset's
checks per partition when it starts. When the asset step fails, the checks do not run, and
the planned executions stayed behind as the newest "Latest execution" of every check
("Execution failed"; "Partition —" once the universe sensor had deleted a partition that
was no symbol) while the list of checks said "Succeeded". Dagster has no API to withdraw a
planned execution, so its row is deleted from ``asset_check_executions`` (the table of
dagster 1.13.27's SQL event log storage; pinned by
test_an_invalid_partition_costs_one_failed_run_and_leaves_no_planned_check).
"""

import datetime as dt

import dagster as dg
import sqlalchemy as sa
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as Target,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]
) -> dict[str, Target]:
    """The newest materialization of each of ``partitions`` of ``asset_key`` that has one."""
    if not partitions:
        return {}
    storage = instance.event_log_storage
    ids = storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not ids:
        return {}
    table = SqlEventLogStorageTable
    with storage.index_connection() as conn:
        rows = conn.execute(
            sa.select(table.c.id, table.c.run_id, table.c.timestamp).where(
                table.c.id.in_(list(ids.values()))
            )
        ).all()
    # The events' time, stored as UTC without a time zone.
    found = {row.id: (row.run_id, row.timestamp.replace(tzinfo=dt.UTC).timestamp()) for row in rows}
    return {
        partition: Target(
            storage_id=storage_id, run_id=found[storage_id][0], timestamp=found[storage_id][1]
        )
        for partition, storage_id in ids.items()
        if storage_id in found
    }


def withdraw_planned_checks(
    instance: dg.DagsterInstance, run_id: str, partitions: list[str]
) -> int:
    """Delete the executions ``run_id`` planned for ``partitions`` and has not run; how many."""
    table = AssetCheckExecutionsTable
    with instance.event_log_storage.index_connection() as conn:
        result = conn.execute(
            sa.delete(table).where(
                table.c.run_id == run_id,
                table.c.partition.in_(partitions),
                table.c.execution_status == AssetCheckExecutionRecordStatus.PLANNED.value,
            )
        )
    return result.rowcount
