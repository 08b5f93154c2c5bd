"""Runs whose process died: marked failed, and their pool slots given back.

A run executed by ``mltrading materialize`` (``execute_job``) lives in that process. Killed
(``kill -9``, a crash, the machine's OOM killer), it stays STARTED for ever and keeps its slot
of the ``market_data_source`` pool, so every later bar run waits for it. Dagster's run
monitoring cannot see such a run (no run launcher started it), so each run carries the host
and pid of the process executing it; a run whose process is gone is reported failed, which
Dagster's concurrency daemon would free slots for (``free_slots_after_run_end_seconds``), and
its slots are freed here at once too, so the CLI does not need the daemon.

``reap_dead_runs`` runs before every CLI launch, in the ``dead_runs_sensor`` every minute,
and from ``mltrading doctor --fix``.
"""

from dataclasses import dataclass

import dagster as dg
import psutil

from mltrading_assets.names import RunTags
from mltrading_assets.workers.hosts import host_name

_ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming the process that executes a run (added by ``lib.launching``)."""
    return {RunTags.HOST: host_name(), RunTags.PID: str(pid or psutil.Process().pid)}


def tag_run_process(context: dg.OpExecutionContext, orchestrator: psutil.Process | None) -> None:
    """Name the run's orchestrating process on a run launched without the tags (by the
    daemon, the UI or a backfill: Dagster's run worker), so a killed one is found too:
    ``DefaultRunLauncher`` has no run-worker health check for run monitoring to use."""
    if orchestrator is None or RunTags.PID in context.run.tags:
        return
    context.instance.add_run_tags(context.run_id, process_tags(orchestrator.pid))


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    pid: int


def _process_gone(run: dg.DagsterRun, started_at: float | None) -> bool:
    """True only when the run's process is known and certainly not running; a run of
    another host, or without the tags, is never judged from here."""
    if run.tags.get(RunTags.HOST) != host_name() or not run.tags.get(RunTags.PID):
        return False
    pid = int(run.tags[RunTags.PID])
    try:
        process = psutil.Process(pid)
        # A recycled pid: a process that began after the run did is another one.
        return started_at is not None and process.create_time() > started_at + 1
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=_ACTIVE))
    return [
        record.dagster_run
        for record in records
        if _process_gone(
            record.dagster_run, record.start_time or record.create_timestamp.timestamp()
        )
    ]


def slots_held_by_finished_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs that ended but still hold pool slots (a failure event written while the
    database was away, say)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return []
    records = instance.get_run_records(
        filters=dg.RunsFilter(run_ids=list(holders), statuses=list(dg.DagsterRunStatus)),
    )
    return [r.dagster_run.run_id for r in records if r.dagster_run.is_finished]


@dataclass(frozen=True)
class Reaped:
    dead: list[DeadRun]
    slots_freed_for: list[str]


def reap_dead_runs(instance: dg.DagsterInstance) -> Reaped:
    """Mark runs whose process is gone as failed, then free every slot a finished run
    holds (theirs included)."""
    dead = []
    for run in dead_runs(instance):
        pid = int(run.tags[RunTags.PID])
        instance.report_run_failed(
            run,
            message=(
                f"the process executing this run (pid {pid} on {run.tags[RunTags.HOST]}) is gone "
                "(killed or crashed); marked failed so its pool slots are given back"
            ),
        )
        dead.append(DeadRun(run.run_id, run.job_name, pid))
    freed = slots_held_by_finished_runs(instance)
    for run_id in freed:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return Reaped(dead=dead, slots_freed_for=freed)
