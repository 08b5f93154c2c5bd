"""A features run follows each market_data run over the same symbols, exactly once,
whichever of the features schedule or the completion sensor gets there first; predictions
follow features runs the same way (``defs/models/sensors.py``)."""

from collections.abc import Callable

import dagster as dg

# What define_asset_job returns (not exported by dagster 1.13.27); for a type hint only.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from mltrading_assets.defs.features.jobs import features_job

FOLLOWS_TAG = "mltrading/after_run"
_PARTITION_TAGS = (
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
)


def followed_already(
    instance: dg.DagsterInstance, run: dg.DagsterRun, tag: str = FOLLOWS_TAG
) -> bool:
    return bool(instance.get_run_ids(filters=dg.RunsFilter(tags={tag: run.run_id}), limit=1))


def request_after(run: dg.DagsterRun, job_name: str, tag: str, key: str) -> dg.RunRequest:
    """A run of ``job_name`` for the symbols of ``run`` (its partition or partition range)."""
    partition_tags = {k: v for k, v in run.tags.items() if k in _PARTITION_TAGS}
    return dg.RunRequest(
        run_key=f"{key}-after:{run.run_id}",
        job_name=job_name,
        tags={**partition_tags, tag: run.run_id},
    )


def follow_up_sensors(
    job: dg.JobDefinition | UnresolvedAssetJobDefinition,
    follow: Callable[[dg.RunStatusSensorContext], dg.RunRequest | dg.SkipReason],
    on_success: tuple[str, str],
    on_failure: tuple[str, str],
) -> tuple[dg.RunStatusSensorDefinition, dg.RunStatusSensorDefinition]:
    """Two run-status sensors (name, description) that request ``job`` through ``follow``:
    one for runs that succeeded, one for runs that failed (a partly failed run still wrote
    its good symbols)."""

    def sensor(status: dg.DagsterRunStatus, name: str, description: str):
        @dg.run_status_sensor(
            name=name,
            run_status=status,
            request_job=job,
            minimum_interval_seconds=10,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=description,
        )
        def _sensor(context: dg.RunStatusSensorContext):
            return follow(context)

        return _sensor

    return (
        sensor(dg.DagsterRunStatus.SUCCESS, *on_success),
        sensor(dg.DagsterRunStatus.FAILURE, *on_failure),
    )


def features_request_after(run: dg.DagsterRun) -> dg.RunRequest:
    return request_after(run, features_job.name, FOLLOWS_TAG, "features")
