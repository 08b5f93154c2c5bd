"""Jobs launched by hand or at night, over the whole universe.

- ``rebuild_all_job``: a year of bars and every feature for all active symbols, in one run
  (Jobs → rebuild_all_job → Launch run). Each symbol is still isolated and still recorded
  as a materialization of its own partitions of both assets.
- ``retention_job``: delete old Dagster runs (and with them their event logs) without losing
  the latest materialization of any partition, which deleting its run would erase.
- ``backup_job``: every schema and the model files into a dated folder (nightly when its
  schedule is switched on).
"""

import datetime as dt
import os
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field

from mltrading_assets.db.backup import backup, existing_schemas
from mltrading_assets.db.symbols import active_symbols
from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.partitions import register_partitions
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS
from mltrading_assets.lib.resources import (
    BarSourceResource,
    ModelingResource,
    PostgresResource,
    ProcessingResource,
)
from mltrading_assets.lib.symbol_batch import process_symbols, raise_for_failures
from mltrading_assets.names import BAR_SOURCE_POOL
from mltrading_assets.paths import project_home
from mltrading_assets.workers.bar_task import load_market_data
from mltrading_assets.workers.feature_task import build_features
from mltrading_assets.workers.isolation import SymbolOutcome


@dg.op(pool=BAR_SOURCE_POOL, out=dg.Out(dict))
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
    register_partitions(context.instance, active)
    result = process_symbols(
        context,
        load_market_data,
        active,
        market_data.key,
        database,
        source,
        processing,
        full_refresh=True,
        workers=source.fetch_workers(processing.worker_count()),
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


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def runs_holding_latest_materializations(
    instance: dg.DagsterInstance, assets: list[dg.AssetKey]
) -> set[str]:
    """Run ids that produced the newest materialization of some partition of ``assets``."""
    from dagster._core.event_api import AssetRecordsFilter
    from dagster._core.events import DagsterEventType

    keep: set[str] = set()
    for key in assets:
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION
        )
        ids = list(latest.values())
        for start in range(0, len(ids), 500):
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, storage_ids=ids[start : start + 500]),
                limit=500,
            ).records
            keep.update(record.run_id for record in records)
    return keep


def expired_runs(
    instance: dg.DagsterInstance, max_age_days: int, now: dt.datetime | None = None
) -> list[str]:
    """Finished runs older than ``max_age_days`` that no partition's latest state depends on."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=max_age_days)
    old = instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED, updated_before=cutoff))
    keep = runs_holding_latest_materializations(
        instance, [market_data.key, feature_engineered_data.key]
    )
    return [record.dagster_run.run_id for record in old if record.dagster_run.run_id not in keep]


class RetentionConfig(dg.Config):
    max_age_days: int = 30


@dg.op(
    description="Delete finished runs older than max_age_days, keeping the runs that hold "
    "the latest materialization of any partition."
)
def delete_expired_runs(context: dg.OpExecutionContext, config: RetentionConfig) -> None:
    run_ids = expired_runs(context.instance, config.max_age_days)
    for run_id in run_ids:
        if run_id != context.run_id:
            context.instance.delete_run(run_id)
    context.log.info(f"deleted {len(run_ids)} runs older than {config.max_age_days} days")


@dg.job(description="Delete old run history (default: older than 30 days).")
def retention_job() -> None:
    delete_expired_runs()


class BackupConfig(dg.Config):
    folder: str = Field(
        default="",
        description="where dated backups go (empty: MLTRADING_BACKUP_DIR, else .mltrading/backups)",
    )
    keep: int = Field(default=7, description="backups kept; older ones are deleted")


@dg.op(
    description="Back up every schema (public, dagster, mlflow with the model files) into a "
    "dated folder, as `mltrading db backup` does, and keep the newest `keep`."
)
def back_up_database(
    context: dg.OpExecutionContext,
    config: BackupConfig,
    database: PostgresResource,
    modeling: ModelingResource,
) -> None:
    root = Path(
        config.folder or os.environ.get("MLTRADING_BACKUP_DIR") or project_home() / "backups"
    )
    target = root / dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    with database.connection() as conn:
        schemas = existing_schemas(conn)
    manifest = backup(database.url, schemas, target, modeling.folder() / "mlflow-artifacts")
    sizes = {name: (target / name).stat().st_size for name in manifest["schemas"].values()}
    kept = sorted(p for p in root.iterdir() if (p / "manifest.json").exists())
    for old in kept[: max(len(kept) - config.keep, 0)]:
        shutil.rmtree(old)
    context.log.info(
        f"backed up {', '.join(manifest['schemas'])} into {target} "
        f"({sum(sizes.values()) / 1e6:.1f} MB); {min(len(kept), config.keep)} backup(s) kept"
    )


@dg.job(description="Back up the database and the model files (scheduled nightly when on).")
def backup_job() -> None:
    back_up_database()
