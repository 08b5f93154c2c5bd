"""On-demand complete rebuild: a year of bars and every feature for all active symbols, in one
run launched by hand (Jobs → rebuild_all_job → Launch run). Each symbol is still isolated and
still recorded as a materialization of its own partitions of both assets."""

import dagster as dg

from mltrading_assets.assets import feature_engineered_data, market_data
from mltrading_assets.assets.symbol_batch import process_symbols, raise_for_failures
from mltrading_assets.db.symbols import active_symbols
from mltrading_assets.isolation import SymbolOutcome
from mltrading_assets.jobs import MAX_RUNTIME_TAGS
from mltrading_assets.partitions import symbol_partitions
from mltrading_assets.resources import BarSourceResource, PostgresResource, ProcessingResource
from mltrading_assets.symbol_work import build_features, load_market_data


@dg.op(pool="market_data_source", out=dg.Out(dict))
def reload_market_data(
    context: dg.OpExecutionContext,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
) -> dict:
    with database.connection() as conn:
        active = active_symbols(conn)
    if not active:
        raise dg.Failure("no active symbols to rebuild: add some with `mltrading symbols add`")
    known = set(context.instance.get_dynamic_partitions(symbol_partitions.name))
    missing = [s for s in active if s not in known]
    if missing:
        context.instance.add_dynamic_partitions(symbol_partitions.name, missing)
    result = process_symbols(
        context,
        load_market_data,
        active,
        market_data.key,
        database,
        source,
        processing,
        full_refresh=True,
        max_workers=source.max_concurrent_requests,
    )
    return {"symbols": active, "succeeded": result.succeeded, "failures": result.failures}


@dg.op
def recompute_features(
    context: dg.OpExecutionContext,
    loaded: dict,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
) -> None:
    failures: list[SymbolOutcome] = list(loaded["failures"])
    if loaded["succeeded"]:
        result = process_symbols(
            context,
            build_features,
            loaded["succeeded"],
            feature_engineered_data.key,
            database,
            source,
            processing,
            full_refresh=True,
        )
        failures += result.failures
    raise_for_failures(failures, len(loaded["symbols"]))


@dg.job(
    tags=MAX_RUNTIME_TAGS,
    description="Reload one year of bars and recompute all features for every active symbol.",
)
def rebuild_all_job() -> None:
    recompute_features(reload_market_data())
