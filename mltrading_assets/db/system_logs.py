"""``system_logs``: one row per finished run, for people who read the database, not the UI."""

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.db.tables import system_logs


def log_run(
    conn: sa.Connection,
    *,
    run_id: str,
    job_name: str,
    partitions: str | None,
    status: str,
    started_at: dt.datetime | None,
    ended_at: dt.datetime | None,
    error: str | None,
    notes: str | None = None,
) -> bool:
    """Record a finished run once (a re-delivered sensor event writes nothing); True if new."""
    duration = (ended_at - started_at).total_seconds() if started_at and ended_at else None
    statement = (
        postgresql.insert(system_logs)
        .values(
            run_id=run_id,
            job_name=job_name,
            partitions=partitions,
            status=status,
            started_at=started_at,
            ended_at=ended_at,
            duration_s=duration,
            error=error[:4000] if error else None,
            notes=notes[:4000] if notes else None,
        )
        .on_conflict_do_nothing(index_elements=["run_id"])
    )
    return conn.execute(statement).rowcount == 1


def log_model_event(
    conn: sa.Connection, run_id: str, status: str, version: str, notes: str
) -> None:
    """A promotion, refusal or rollback of the model (``status`` PROMOTED, REFUSED or
    ROLLED_BACK), beside the runs; ``run_id`` is the run (or command) that decided."""
    log_run(
        conn,
        run_id=f"{run_id}:model",
        job_name="model_promotion",
        partitions=f"version {version}",
        status=status,
        started_at=None,
        ended_at=None,
        error=None,
        notes=notes,
    )
