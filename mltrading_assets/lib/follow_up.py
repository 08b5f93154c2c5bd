"""Runs that follow other runs over the same symbols, exactly once: features after bars,
predictions after features. Whichever of a schedule or a run-status sensor gets there first
requests the follow-up; the tag naming the followed run keeps the other from doing it again."""

from collections.abc import Callable

import dagster as dg

# What define_asset_job returns (not exported by dagster 1.13.27); for a type hint only.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from mltrading_assets.lib.partitions import symbol_partitions
from mltrading_assets.lib.ranged_runs import (
    PARTITION_TAGS,
    contiguous_ranges,
    range_tags,
    run_symbols,
)
from mltrading_assets.sources import is_valid_symbol

AssetJob = dg.JobDefinition | UnresolvedAssetJobDefinition


def materialized_by(run: dg.DagsterRun, job: AssetJob, asset: dg.AssetKey) -> bool:
    """Whether ``run`` materialized ``asset``: a run of its own job carries no asset selection
    (the job is the selection); UI launches and backfills do."""
    return run.job_name == job.name or asset in (run.asset_selection or ())


def followed_already(instance: dg.DagsterInstance, run: dg.DagsterRun, tag: str) -> bool:
    return bool(instance.get_run_ids(filters=dg.RunsFilter(tags={tag: run.run_id}), limit=1))


def requests_after(
    instance: dg.DagsterInstance, run: dg.DagsterRun, job_name: str, tag: str, key: str
) -> list[dg.RunRequest]:
    """Runs of ``job_name`` for the symbols of ``run`` (its partition or partition range)
    that are valid symbols and still partitions: a key added in the UI that is no symbol
    fails its own run once, and nothing follows it."""
    ordered = instance.get_dynamic_partitions(symbol_partitions.name)
    covered = run_symbols(run, ordered)
    partitions = set(ordered)
    kept = [s for s in covered if s in partitions and is_valid_symbol(s)]
    if kept and kept == covered:
        partition_tags = {k: v for k, v in run.tags.items() if k in PARTITION_TAGS}
        return [
            dg.RunRequest(
                run_key=f"{key}-after:{run.run_id}",
                job_name=job_name,
                tags={**partition_tags, tag: run.run_id},
            )
        ]
    return [
        dg.RunRequest(
            run_key=f"{key}-after:{run.run_id}:{first}..{last}",
            job_name=job_name,
            tags={**range_tags(first, last), tag: run.run_id},
        )
        for first, last in contiguous_ranges(ordered, kept)
    ]


def follow_up_sensors(
    job: AssetJob,
    follow: Callable[[dg.RunStatusSensorContext], list[dg.RunRequest] | dg.SkipReason | None],
    on_success: tuple[str, str],
    on_failure: tuple[str, str],
) -> tuple[dg.RunStatusSensorDefinition, dg.RunStatusSensorDefinition]:
    """Two run-status sensors (name, description) that request ``job`` through ``follow``:
    one for runs that succeeded, one for runs that failed (a partly failed run still wrote
    its good symbols).

    ``follow`` returns None for a run that is none of its business (another job's, or one
    followed already): Dagster 1.13 ends a run-status sensor's tick at the first finished
    run for which the function returns anything, a SkipReason included, so a checks run that
    ended just before a bars run cost that run's follow-up a whole sensor loop (5 s), two
    such runs 10. None moves on to the next finished run in the same tick
    (``test_one_tick_follows_a_data_run_behind_runs_it_skips``)."""

    def sensor(status: dg.DagsterRunStatus, name: str, description: str):
        @dg.run_status_sensor(
            name=name,
            run_status=status,
            request_job=job,
            # Below the daemon's 5 s sensor loop, so every loop evaluates it: at 5 s, a loop
            # that came a few milliseconds early skipped it, and a range's features waited
            # 10 s to be requested (at 10 s, ~7 s more per range than at 5).
            minimum_interval_seconds=1,
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
