"""A features run follows each market_data run over the same symbols, exactly once,
whichever of the features schedule or the completion sensor gets there first; predictions
follow features runs the same way (``defs/models/sensors.py``)."""

import dagster as dg

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


def features_request_after(run: dg.DagsterRun) -> dg.RunRequest:
    return request_after(run, features_job.name, FOLLOWS_TAG, "features")
