"""Partitions: one per symbol, grown by ``mltrading symbols add`` and the universe sensor."""

import warnings

import dagster as dg

from mltrading_assets.lib.ranged_runs import SYMBOLS_PER_RUN

# backfill_policy is beta in Dagster 1.13; batching symbols into runs depends on it on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

symbol_partitions = dg.DynamicPartitionsDefinition(name="symbols")

# Backfills launched from the UI group symbols into runs of SYMBOLS_PER_RUN.
symbol_batches = dg.BackfillPolicy.multi_run(max_partitions_per_run=SYMBOLS_PER_RUN)
