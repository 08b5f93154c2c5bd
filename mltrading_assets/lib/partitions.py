"""Symbol partitions, and what every symbol-partitioned asset shares: one partition per symbol
(grown by ``mltrading symbols add`` and the universe sensor), backfills in ranged runs, the
retry policy and the owners."""

import warnings
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mltrading_assets.db.symbols import active_symbols
from mltrading_assets.lib.ranged_runs import SYMBOLS_PER_RUN
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.names import OWNERS, SYMBOL_PARTITIONS

# backfill_policy is beta in Dagster 1.13; batching symbols into runs depends on it on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

symbol_partitions = dg.DynamicPartitionsDefinition(name=SYMBOL_PARTITIONS)

# Backfills launched from the UI group symbols into runs of SYMBOLS_PER_RUN.
symbol_batches = dg.BackfillPolicy.multi_run(max_partitions_per_run=SYMBOLS_PER_RUN)

# Partitioned by symbol, and backfilled a few hundred symbols per run.
SYMBOL_PARTITIONED: dict[str, Any] = {
    "partitions_def": symbol_partitions,
    "backfill_policy": symbol_batches,
}


def retry_policy(delay_seconds: int) -> dg.RetryPolicy:
    """Two more tries, further apart each time, jittered so retried runs do not march in step."""
    return dg.RetryPolicy(
        max_retries=2,
        delay=delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def market_asset(**kwargs: Any):
    """``@dg.asset`` for a table of per-symbol rows in the ``market`` group: each run's symbols
    are its partitions, each recorded on its own (so the asset's result is optional)."""
    return dg.asset(
        **SYMBOL_PARTITIONED,
        output_required=False,
        group_name="market",
        kinds={"postgres", "pandas"},
        owners=OWNERS,
        retry_policy=retry_policy(10),
        **kwargs,
    )


@dataclass(frozen=True)
class ActivePartitions:
    """The partitions in their order, and the active symbols among them (in that order)."""

    ordered: list[str]
    symbols: list[str]


def partitions_among(instance: dg.DagsterInstance, symbols: list[str]) -> ActivePartitions:
    """Which of ``symbols`` are partitions; a symbol only in ``stock_info`` waits for the
    universe sensor."""
    ordered = instance.get_dynamic_partitions(symbol_partitions.name)
    wanted = set(symbols)
    return ActivePartitions(ordered, [s for s in ordered if s in wanted])


def active_partitions(instance: dg.DagsterInstance, database: PostgresResource) -> ActivePartitions:
    """The active symbols that are partitions: what a tick, a check run over everything or a
    new champion works on."""
    with database.connection() as conn:
        active = active_symbols(conn)
    return partitions_among(instance, active)


def register_partitions(instance: dg.DagsterInstance, symbols: list[str]) -> list[str]:
    """Add the symbols that are not partitions yet (one call for all); returns those added."""
    existing = set(instance.get_dynamic_partitions(symbol_partitions.name))
    new = [s for s in symbols if s not in existing]
    if new:
        instance.add_dynamic_partitions(symbol_partitions.name, new)
    return new
