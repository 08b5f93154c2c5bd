"""Partitions: one per symbol, grown by ``mltrading symbols add`` and the universe sensor."""

import os
import warnings

import dagster as dg

# backfill_policy is beta in Dagster 1.13; batching symbols into runs depends on it on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

symbol_partitions = dg.DynamicPartitionsDefinition(name="symbols")

# Dagster pays ~2 s per run; one run per symbol would be slower than the system we replace.
# Backfills and schedules group symbols into runs of this size instead.
SYMBOLS_PER_RUN = int(os.environ.get("MLTRADING_SYMBOLS_PER_RUN", "500"))

symbol_batches = dg.BackfillPolicy.multi_run(max_partitions_per_run=SYMBOLS_PER_RUN)


def contiguous_ranges(
    ordered_keys: list[str], selected: list[str] | set[str], max_per_run: int = SYMBOLS_PER_RUN
) -> list[tuple[str, str]]:
    """Split ``selected`` into ranges of adjacent keys of ``ordered_keys`` (the partition
    order, which for dynamic partitions is insertion order), at most ``max_per_run`` each.

    A ranged run covers every key between its ends, so a gap in the selection starts a new range.
    """
    wanted = set(selected)
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
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
