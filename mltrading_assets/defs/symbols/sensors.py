"""The symbol universe grows itself: active ``stock_info`` rows become partitions, and new
symbols get their history loaded in one batched run (features follow). Partitions and
``stock_info`` are kept in step both ways: a partition added in the UI ("Add a partition")
becomes an active symbol, or, if it is no valid symbol, is removed again."""

import dagster as dg
import pandas as pd
import sqlalchemy as sa

# Not exported by dagster 1.13.27: the backfill filter of symbols_in_flight.
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from mltrading_assets.db.symbols import add_symbols, known_symbols, symbols_changed_since
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.lib.follow_up import materialized_by
from mltrading_assets.lib.partitions import symbol_partitions
from mltrading_assets.lib.ranged_runs import (
    contiguous_ranges,
    range_tags,
    run_symbols,
)
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.names import RunTags
from mltrading_assets.sources import InvalidSymbolError, validate_symbol

_IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def symbols_in_flight(
    context: dg.SensorEvaluationContext, ordered: list[str]
) -> tuple[set[str], set[str]]:
    """Symbols of runs not yet finished: those whose bars a run or an asset backfill is about
    to load (a UI backfill launched right after `symbols add` must not load them a second
    time), and those any run covers (a partition is not removed under its run)."""
    instance = context.instance
    busy: set[str] = set()
    covered: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT)):
        symbols = run_symbols(run, ordered)
        covered.update(symbols)
        if materialized_by(run, market_data_job, market_data.key):
            busy.update(symbols)
    # A backfill's runs appear a daemon tick after it is requested; its target is read from
    # Dagster's backfill data (internal API of 1.13.27, pinned by
    # test_universe_sensor_leaves_symbols_a_backfill_loads_to_it).
    requested = instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])
    )
    asset_backfills = [b for b in requested if b.is_asset_backfill]
    asset_graph = context.repository_def.asset_graph if asset_backfills else None
    for backfill in asset_backfills:
        data = backfill.get_asset_backfill_data(asset_graph)
        subset = data.get_target_partitions_subset(market_data.key)
        if subset is not None:
            busy.update(subset.get_partition_keys())
    return busy, covered


def universe_result(
    instance: dg.DagsterInstance,
    changed: pd.DataFrame,
    cursor: str,
    busy: set[str] = frozenset(),
) -> dg.SensorResult | dg.SkipReason:
    if changed.empty:
        return dg.SkipReason("no symbols added or re-activated")
    symbols = changed["symbol"].tolist()
    new_cursor = pd.Timestamp(changed["updated_at"].max()).isoformat()
    existing = instance.get_dynamic_partitions(symbol_partitions.name)
    registered = set(existing)
    new_partitions = [s for s in symbols if s not in registered]
    # Only symbols without any bars yet need their history loaded, and not twice.
    loaded = instance.get_materialized_partitions(market_data.key)
    to_load = [s for s in symbols if s not in loaded and s not in busy]
    ordered = existing + new_partitions
    requests = [
        dg.RunRequest(
            run_key=f"history:{new_cursor}:{first}..{last}",
            job_name=market_data_job.name,
            tags={**range_tags(first, last), RunTags.NEW_SYMBOLS: "true"},
        )
        for first, last in contiguous_ranges(ordered, to_load)
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [symbol_partitions.build_add_request(new_partitions)] if new_partitions else []
        ),
        cursor=new_cursor,
    )


@dg.sensor(
    job=market_data_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches stock_info: active symbols become partitions, and new ones get their "
        "history loaded (features follow)."
    ),
)
def symbol_universe_sensor(context: dg.SensorEvaluationContext, database: PostgresResource):
    cursor = context.cursor or "1970-01-01T00:00:00+00:00"
    partitions = context.instance.get_dynamic_partitions(symbol_partitions.name)
    with database.connection(begin=True) as conn:
        adopted, invalid = adopt_ui_partitions(conn, partitions)
        changed = symbols_changed_since(conn, cursor)
    for symbol in adopted:
        context.log.info(f"partition {symbol} was added in the UI: now an active symbol")
    loading, covered = symbols_in_flight(context, partitions)
    # Removed once no run uses it: a run whose partition vanished under it fails with
    # Dagster's "not a valid range" instead of the reason.
    removable = {name: why for name, why in invalid.items() if name not in covered}
    for name, problem in invalid.items():
        if name in removable:
            context.log.warning(f"removed partition {problem}")
        else:
            context.log.warning(f"partition {name!r} is removed once its run ends: {problem}")
    result = universe_result(context.instance, changed, cursor, loading)
    if not removable:
        return result
    removal = symbol_partitions.build_delete_request(list(removable))
    if isinstance(result, dg.SkipReason):
        return dg.SensorResult(skip_reason=result, dynamic_partitions_requests=[removal])
    result.dynamic_partitions_requests.append(removal)
    return result


def adopt_ui_partitions(
    conn: sa.Connection, partitions: list[str]
) -> tuple[list[str], dict[str, str]]:
    """Partitions missing from ``stock_info`` (added with the UI's "Add a partition"): a
    valid symbol is registered as active, so it is scheduled like any other; anything else
    is returned with the reason, for removal."""
    known = known_symbols(conn, partitions)
    orphans = [p for p in partitions if p not in known]
    valid, invalid = [], {}
    for name in orphans:
        try:
            valid.append(validate_symbol(name))
        except InvalidSymbolError as exc:
            invalid[name] = str(exc)
    add_symbols(conn, valid)
    return valid, invalid
