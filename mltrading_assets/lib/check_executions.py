"""Planned check executions that will never run, removed from Dagster's storage.

A run that materializes an asset from the UI plans one execution of each of the asset's
checks per partition when it starts. When the asset step fails, the checks do not run, and
the planned executions stayed behind as the newest "Latest execution" of every check
("Execution failed"; "Partition —" once the universe sensor had deleted a partition that
was no symbol) while the list of checks said "Succeeded". Dagster has no API to withdraw a
planned execution, so its row is deleted from ``asset_check_executions`` (the table of
dagster 1.13.27's SQL event log storage; pinned by
test_an_invalid_partition_costs_one_failed_run_and_leaves_no_planned_check).
"""

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable


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
