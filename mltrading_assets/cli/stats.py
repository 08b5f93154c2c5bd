"""Workflow statistics from Dagster's run storage and the application tables."""

import datetime as dt
from typing import Any

import dagster as dg
import numpy as np
import sqlalchemy as sa

from mltrading_assets.db.reports import row_counts


def run_stats(instance: dg.DagsterInstance, since: dt.datetime) -> dict[str, Any]:
    records = instance.get_run_records(filters=dg.RunsFilter(created_after=since))
    statuses: dict[str, int] = {}
    durations = []
    for record in records:
        status = record.dagster_run.status.value
        statuses[status] = statuses.get(status, 0) + 1
        if record.start_time and record.end_time:
            durations.append(record.end_time - record.start_time)
    finished = statuses.get("SUCCESS", 0) + statuses.get("FAILURE", 0)
    return {
        "runs": len(records),
        "by_status": statuses,
        "success_rate": round(statuses.get("SUCCESS", 0) / finished, 4) if finished else None,
        "median_duration_s": round(float(np.median(durations)), 2) if durations else None,
        "p95_duration_s": round(float(np.percentile(durations, 95)), 2) if durations else None,
    }


def slowest_symbols(
    instance: dg.DagsterInstance, asset_keys: list[dg.AssetKey], since: dt.datetime, top: int = 5
) -> list[dict[str, Any]]:
    """Symbols whose per-symbol work took longest (``duration_s`` metadata) since ``since``."""
    from dagster._core.event_api import AssetRecordsFilter

    slowest: dict[tuple[str, str], float] = {}
    for key in asset_keys:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, after_timestamp=since.timestamp()), limit=10_000
        ).records
        for record in records:
            event = record.asset_materialization
            duration = event.metadata.get("duration_s")
            if event.partition and duration is not None:
                k = (key.to_user_string(), event.partition)
                slowest[k] = max(slowest.get(k, 0.0), float(duration.value))
    ranked = sorted(slowest.items(), key=lambda item: -item[1])[:top]
    return [{"asset": a, "symbol": s, "duration_s": round(d, 3)} for (a, s), d in ranked]


def table_rows(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return row_counts(conn)


def collect(instance: dg.DagsterInstance, engine: sa.Engine, asset_keys: list[dg.AssetKey]) -> dict:
    now = dt.datetime.now(dt.UTC)
    day, week = now - dt.timedelta(days=1), now - dt.timedelta(days=7)
    return {
        "last_day": run_stats(instance, day),
        "last_week": run_stats(instance, week),
        "slowest_symbols_last_day": slowest_symbols(instance, asset_keys, day),
        "rows": table_rows(engine),
    }
