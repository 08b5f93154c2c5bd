"""A features run follows each market_data run over the same symbols, exactly once,
whichever of the features schedule or the completion sensor gets there first."""

import dagster as dg

from mltrading_assets.defs.features.jobs import features_job

FOLLOWS_TAG = "mltrading/after_run"
_PARTITION_TAGS = (
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
)


def followed_already(instance: dg.DagsterInstance, data_run: dg.DagsterRun) -> bool:
    return bool(
        instance.get_run_ids(filters=dg.RunsFilter(tags={FOLLOWS_TAG: data_run.run_id}), limit=1)
    )


def features_request_after(data_run: dg.DagsterRun) -> dg.RunRequest:
    """Features for the symbols of ``data_run`` (its partition or partition range)."""
    partition_tags = {k: v for k, v in data_run.tags.items() if k in _PARTITION_TAGS}
    return dg.RunRequest(
        run_key=f"features-after:{data_run.run_id}",
        job_name=features_job.name,
        tags={**partition_tags, FOLLOWS_TAG: data_run.run_id},
    )
