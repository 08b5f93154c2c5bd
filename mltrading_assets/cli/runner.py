"""Launch batched, symbol-ranged runs from Python (CLI, tests, benchmark), through the real
executor: each run's steps go through the multiprocess executor, exactly as in production."""

from dataclasses import dataclass

import dagster as dg

from mltrading_assets.defs.symbols.partitions import symbol_partitions
from mltrading_assets.lib.ranged_runs import SYMBOLS_PER_RUN, contiguous_ranges, range_tags


def market_data_job_def() -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return defs.resolve_job_def("market_data_job")


def features_job_def() -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return defs.resolve_job_def("features_job")


def rebuild_all_job_def() -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return defs.resolve_job_def("rebuild_all_job")


def quality_checks_job_def() -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return defs.resolve_job_def("quality_checks_job")


JOBS = {
    "market_data": market_data_job_def,
    "features": features_job_def,
    "checks": quality_checks_job_def,
}


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    first: str
    last: str
    success: bool


def register_partitions(instance: dg.DagsterInstance, symbols: list[str]) -> list[str]:
    """Add the symbols that are not partitions yet (one call for all); returns those added."""
    existing = set(instance.get_dynamic_partitions(symbol_partitions.name))
    new = [s for s in symbols if s not in existing]
    if new:
        instance.add_dynamic_partitions(symbol_partitions.name, new)
    return new


def materialize(
    instance: dg.DagsterInstance,
    asset: str,
    symbols: list[str],
    symbols_per_run: int = SYMBOLS_PER_RUN,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    log_level: str = "INFO",
) -> list[RunSummary]:
    """Materialize ``asset`` ("market_data" or "features"), or run the quality "checks", for
    ``symbols`` in ranged runs.

    ``run_config`` replaces a resource's whole configuration (e.g. a pinned synthetic clock).
    """
    ordered = instance.get_dynamic_partitions(symbol_partitions.name)
    unknown = sorted(set(symbols) - set(ordered))
    if unknown:
        raise ValueError(f"not registered as partitions: {', '.join(unknown)}")
    job = dg.reconstructable(JOBS[asset])
    summaries = []
    for first, last in contiguous_ranges(ordered, symbols, symbols_per_run):
        with dg.execute_job(
            job,
            instance=instance,
            tags={**range_tags(first, last), **(tags or {})},
            run_config={
                **(run_config or {}),
                "loggers": {"console": {"config": {"log_level": log_level}}},
            },
        ) as result:
            summaries.append(RunSummary(result.run_id, first, last, result.success))
    return summaries


def rebuild_all(
    instance: dg.DagsterInstance, run_config: dict | None = None, log_level: str = "INFO"
) -> RunSummary:
    """Run the complete rebuild (a year of bars and all features, every active symbol)."""
    with dg.execute_job(
        dg.reconstructable(rebuild_all_job_def),
        instance=instance,
        run_config={
            **(run_config or {}),
            "loggers": {"console": {"config": {"log_level": log_level}}},
        },
    ) as result:
        return RunSummary(result.run_id, "", "", result.success)
