"""Ranged runs: one run covers a contiguous range of symbol partitions, so Dagster's per-run
cost is paid once per batch of symbols, never per symbol."""

import os

import dagster as dg
from dagster._core.storage.tags import (  # Dagster's own tag names (1.13.27)
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    MAX_RUNTIME_SECONDS_TAG,
    PARTITION_NAME_TAG,
)

# Dagster pays ~2 s per run; one run per symbol would be slower than the system we replace.
# Backfills and schedules group symbols into runs of this size instead.
SYMBOLS_PER_RUN = int(os.environ.get("MLTRADING_SYMBOLS_PER_RUN", "500"))
# Beyond this many ranges, runs grow instead: each run's start and end leave cores idle (the
# next bars run waits for the source pool), so at 10,000 symbols 12 ranges made a tick slower
# than 8. Enough ranges stay for a range's features to overlap the next range's bars, and to
# keep a few worker hosts busy.
MAX_RANGES = int(os.environ.get("MLTRADING_MAX_RANGES", "8"))

# Runs stop after this long (run monitoring): a stuck source must not hold the queue forever.
MAX_RUNTIME_TAGS = {MAX_RUNTIME_SECONDS_TAG: "3600"}

# The tags that say which symbols a run covers: one partition, or a range of them.
PARTITION_TAGS = (
    PARTITION_NAME_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    ASSET_PARTITION_RANGE_END_TAG,
)


def symbols_per_run(count: int) -> int:
    """How many symbols each run covers when ``count`` are due: ``SYMBOLS_PER_RUN``, or more
    where that would make more than ``MAX_RANGES`` runs."""
    return max(SYMBOLS_PER_RUN, -(-count // max(MAX_RANGES, 1)))


def contiguous_ranges(
    ordered_keys: list[str], selected: list[str] | set[str], max_per_run: int | None = None
) -> list[tuple[str, str]]:
    """Split ``selected`` into ranges of adjacent keys of ``ordered_keys`` (the partition
    order, which for dynamic partitions is insertion order), at most ``max_per_run`` each
    (by default ``symbols_per_run`` of the selection).

    A ranged run covers every key between its ends, so a gap in the selection starts a new range.
    """
    wanted = set(selected)
    max_per_run = max_per_run or symbols_per_run(len(wanted))
    ranges: list[tuple[str, str]] = []
    run: list[str] = []
    for key in ordered_keys:
        if key in wanted and len(run) < max_per_run:
            run.append(key)
            continue
        if run:
            ranges.append((run[0], run[-1]))
        run = [key] if key in wanted else []
    if run:
        ranges.append((run[0], run[-1]))
    return ranges


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the partitions ``first``..``last``."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def run_symbols(run: dg.DagsterRun, ordered: list[str]) -> list[str]:
    """The symbols ``run`` covers, given the partitions in order ([] for an unpartitioned run)."""
    first = run.tags.get(ASSET_PARTITION_RANGE_START_TAG)
    if first is not None:
        position = {key: i for i, key in enumerate(ordered)}
        if first not in position:
            return []
        last = run.tags[ASSET_PARTITION_RANGE_END_TAG]
        return ordered[position[first] : position.get(last, -1) + 1]
    single = run.tags.get(PARTITION_NAME_TAG)
    return [single] if single else []


def partitions_label(run: dg.DagsterRun) -> str | None:
    """``FIRST..LAST`` for a ranged run, the partition of a one-partition run, else None."""
    first = run.tags.get(ASSET_PARTITION_RANGE_START_TAG)
    if first:
        return f"{first}..{run.tags[ASSET_PARTITION_RANGE_END_TAG]}"
    return run.tags.get(PARTITION_NAME_TAG)


def symbol_range_requests(
    ordered_partitions: list[str], symbols: list[str], run_key_prefix: str, tags: dict[str, str]
) -> list[dg.RunRequest]:
    """Ranged run requests covering ``symbols`` (in partition order), a few hundred per run."""
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{first}..{last}",
            tags={**range_tags(first, last), **tags},
        )
        for first, last in contiguous_ranges(ordered_partitions, symbols)
    ]
