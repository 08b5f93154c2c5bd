"""What counts as wrong, read from Dagster's instance and the application tables: the
conditions the alert sensors (``defs/alerts``) hand to ``alerts.reconcile``. Each returns
every condition true now, under keys stable across evaluations, so an incident is
announced once and closed when its key is gone."""

import datetime as dt
import statistics
import warnings
from collections import defaultdict

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.alerts import Condition
from mltrading_assets.db.reports import newest_rows
from mltrading_assets.lib.ranged_runs import partitions_label, run_symbols
from mltrading_assets.names import CHECKS_RECORD_FAILURES, SYMBOL_PARTITIONS, RunTags
from mltrading_assets.trading_calendar import NEW_YORK, trading_hours_before

ERROR, WARN, INFO = "ERROR", "WARN", "INFO"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# What a message lists before it says "and N more": enough to act on, short enough to read.
NAMED = 20


def _named(names: list[str]) -> str:
    more = len(names) - NAMED
    return ", ".join(names[:NAMED]) + (f" and {more} more" if more > 0 else "")


def _job(run: dg.DagsterRun) -> str:
    return "asset materialization (UI)" if run.job_name == "__ASSET_JOB" else run.job_name


# The promotion gate refuses a model by failing its blocking check, and so its run: that is
# alert_model_decisions' news (INFO), not a failure.
GATE_REFUSAL = "promotion_gate"


def _failed_symbols(instance: dg.DagsterInstance, run_id: str) -> tuple[dict, list[str]] | None:
    """The symbols a run's steps named as failed, with their reasons, and the other steps'
    errors; None when the only failure is the promotion gate refusing a model."""
    symbols: dict[str, str] = {}
    errors = []
    refusals = 0
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        failure = record.event_log_entry.dagster_event.step_failure_data
        user = failure.user_failure_data
        named = user.metadata.get("failed_symbols") if user else None
        if named is not None:
            symbols.update(named.value)
        elif (
            failure.error
            and failure.error.cls_name == "DagsterAssetCheckFailedError"
            and (GATE_REFUSAL in failure.error.message)
        ):
            refusals += 1
        elif failure.error:
            errors.append(f"{record.event_log_entry.step_key}: {failure.error.message.strip()}")
    if refusals and not symbols and not errors:
        return None
    return symbols, errors


def _reason(symbol: str, error: str) -> str:
    # A worker's error often names its symbol already.
    error = str(error)[:200]
    return error if error.startswith(f"{symbol}:") else f"{symbol}: {error}"


def failed_runs(
    instance: dg.DagsterInstance, now: pd.Timestamp, lookback: dt.timedelta, link
) -> list[Condition]:
    """One condition per job whose latest run of some partition range (within ``lookback``)
    failed: a later successful run of the same range clears it."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED, updated_after=(now - lookback).to_pydatetime())
    )
    latest: dict[tuple[str, str | None], dg.DagsterRun] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        latest[(run.job_name, partitions_label(run))] = run
    failing: dict[str, list[tuple[dg.DagsterRun, tuple]]] = defaultdict(list)
    for run in latest.values():
        if run.status == dg.DagsterRunStatus.FAILURE:
            failed = _failed_symbols(instance, run.run_id)
            if failed is not None:
                failing[run.job_name].append((run, failed))
    conditions = []
    for job_name, runs in sorted(failing.items()):
        lines, subjects = [], {}
        for run, (symbols, errors) in runs:
            label = partitions_label(run) or "no partitions"
            what = (
                f"{len(symbols)} symbol(s) failed: "
                + "; ".join(_reason(s, e) for s, e in list(symbols.items())[:NAMED])
                if symbols
                else " | ".join(e[:300] for e in errors) or "the run failed"
            )
            lines.append(f"- run {run.run_id[:8]} ({label}): {what}\n  {link(run.run_id)}")
            # By range: the same symbols failing again next hour are the same news.
            subjects[label] = {"run_id": run.run_id, "failed_symbols": symbols}
        job = _job(runs[0][0])
        conditions.append(
            Condition(
                key=f"run_failed:{job_name}",
                severity=ERROR,
                title=f"{job}: {len(runs)} run(s) failed",
                body="\n".join(lines),
                subjects=subjects,
            )
        )
    return conditions


def check_key(evaluation: dg.AssetCheckEvaluation) -> str:
    return f"check_failed:{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"


def _numbers(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {name: value.value for name, value in evaluation.metadata.items()}


def failed_checks(
    instance: dg.DagsterInstance,
    cursor: int | None,
    state: dict[str, dict],
    since: pd.Timestamp,
    limit: int = 5000,
) -> tuple[list[Condition], int | None]:
    """ERROR-severity check failures by check, updated from the evaluations recorded since
    ``cursor`` (the first time: since ``since``, not the whole event log): a symbol's failing
    evaluation adds it to its check's incident, a later passing one removes it, and so does
    the summary of a later hourly run of its symbol that recorded no failure for it. ``state`` is
    the open incidents' symbols. At most ``limit`` evaluations a call: the rest next time."""
    from dagster._core.event_api import EventRecordsFilter

    with warnings.catch_warnings():
        # No public replacement for reading check evaluations by storage id in 1.13.27.
        warnings.simplefilter("ignore")
        records = instance.get_event_records(
            EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                after_cursor=cursor,
                after_timestamp=since.timestamp() if cursor is None else None,
            ),
            limit=limit,
            ascending=True,
        )
    symbols = defaultdict(dict, {key: dict(value) for key, value in state.items()})
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        key = check_key(evaluation)
        if evaluation.partition is None:
            # A run's summary: its symbols have evaluations of their own, except the passing
            # ones of an hourly run, which records only failures.
            if symbols.get(key):
                for symbol in _passed_unrecorded(instance, record.run_id, evaluation):
                    symbols[key].pop(symbol, None)
            continue
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            symbols[key][evaluation.partition] = _numbers(evaluation)
        else:
            symbols[key].pop(evaluation.partition, None)
        cursor = record.storage_id
    conditions = []
    for key, failing in sorted(symbols.items()):
        if not failing:
            continue
        _, asset, check = key.split(":", 2)
        lines = [
            f"- {symbol}: "
            + ", ".join(f"{name}={value}" for name, value in list(numbers.items())[:6])[:300]
            for symbol, numbers in sorted(failing.items())[:NAMED]
        ]
        if len(failing) > NAMED:
            lines.append(f"… and {len(failing) - NAMED} more")
        conditions.append(
            Condition(
                key=key,
                severity=ERROR,
                title=f"check {check} of {asset} fails for {len(failing)} symbol(s): "
                + _named(sorted(failing))[:200],
                body="\n".join(lines),
                subjects=failing,
            )
        )
    return conditions, cursor


def _passed_unrecorded(
    instance: dg.DagsterInstance, run_id: str, summary: dg.AssetCheckEvaluation
) -> list[str]:
    """The symbols a check run that records only failures judged and found passing (none
    for a run that records every symbol): every symbol of its range but those it recorded."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.tags.get(RunTags.CHECKS_RECORD) != CHECKS_RECORD_FAILURES:
        return []
    recorded = {
        record.event_log_entry.dagster_event.event_specific_data.partition
        for record in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        if record.event_log_entry.dagster_event.event_specific_data.check_name == summary.check_name
        and record.event_log_entry.dagster_event.event_specific_data.asset_key == summary.asset_key
    }
    ordered = instance.get_dynamic_partitions(SYMBOL_PARTITIONS)
    return [symbol for symbol in run_symbols(run, ordered) if symbol not in recorded]


def _duration(record) -> float | None:
    if record.start_time and record.end_time:
        return record.end_time - record.start_time
    return None


def expected_duration(
    instance: dg.DagsterInstance, run: dg.DagsterRun, default_s: float
) -> tuple[float, str]:
    """How long ``run`` should take: the median of its job's last successful runs of the
    same partitions (else of any partitions), else ``default_s``; and where that came from."""
    history = instance.get_run_records(
        filters=dg.RunsFilter(job_name=run.job_name, statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=50,
    )
    label = partitions_label(run)
    same = [d for r in history if partitions_label(r.dagster_run) == label if (d := _duration(r))]
    if len(same) >= 3:
        return statistics.median(same[:10]), f"median of its last {len(same[:10])} runs"
    durations = [d for r in history if (d := _duration(r))]
    if len(durations) >= 3:
        return statistics.median(durations[:10]), f"median of {len(durations[:10])} runs of the job"
    return default_s, "the default, no history yet"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def slow_runs(
    instance: dg.DagsterInstance, now: pd.Timestamp, factor: float, default_s: float, link
) -> list[Condition]:
    """Runs still going past ``factor`` × their expected duration."""
    conditions = []
    running = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    )
    for record in running:
        if not record.start_time:
            continue
        run = record.dagster_run
        elapsed = now.timestamp() - record.start_time
        expected, basis = expected_duration(instance, run, default_s)
        if elapsed <= factor * expected:
            continue
        label = partitions_label(run) or "no partitions"
        conditions.append(
            Condition(
                key=f"slow_run:{run.run_id}",
                severity=WARN,
                title=f"{_job(run)} run {run.run_id[:8]} ({label}) is slow",
                body=(
                    f"running for {_span(elapsed)}, more than {factor:g} × the "
                    f"{_span(expected)} expected ({basis})\n{link(run.run_id)}"
                ),
                subjects={"run_id": run.run_id, "elapsed_s": round(elapsed)},
            )
        )
    return conditions


def stale_symbols(
    conn: sa.Connection, source: str, now: pd.Timestamp, trading_hours: float
) -> list[Condition] | None:
    """Active symbols whose newest bar, or newest feature row, is more than ``trading_hours``
    of NYSE trading time old; None while NYSE is closed (nothing is due then)."""
    cutoff = trading_hours_before(now, trading_hours)
    if cutoff is None:
        return None
    stale: dict[str, dict[str, str]] = {"market_data": {}, "feature_engineered_data": {}}
    for row in newest_rows(conn, source):
        for table, newest in (("market_data", row.bars), ("feature_engineered_data", row.features)):
            if newest is None and row.added_at < cutoff:
                stale[table][row.symbol] = "none yet"
            elif newest is not None and newest < cutoff:
                local = pd.Timestamp(newest).tz_convert(NEW_YORK)
                stale[table][row.symbol] = f"{local:%m-%d %H:%M}"
    conditions = []
    for table, symbols in stale.items():
        if not symbols:
            continue
        names = sorted(symbols)
        listed = [f"{s} (newest {symbols[s]})" for s in names]
        conditions.append(
            Condition(
                key=f"stale:{table}",
                severity=WARN,
                title=f"{table}: {len(names)} symbol(s) more than {trading_hours:g} trading "
                f"hours old: {_named(names)[:200]}",
                body=f"newest row before {cutoff.tz_convert(NEW_YORK):%Y-%m-%d %H:%M} New York:"
                f"\n{_named(listed)}",
                subjects=symbols,
            )
        )
    return conditions


def daemon_problems(
    instance: dg.DagsterInstance, now: pd.Timestamp, heartbeat_s: float = 300.0, failures: int = 3
) -> list[Condition]:
    """Daemons whose heartbeat is older than ``heartbeat_s``, and sensors or schedules whose
    last ``failures`` ticks all failed."""
    from dagster._core.scheduler.instigation import TickStatus

    conditions = []
    heartbeats = instance.get_daemon_heartbeats()
    for daemon in instance.get_required_daemon_types():
        beat = heartbeats.get(daemon)
        age = now.timestamp() - beat.timestamp if beat else None
        if age is None or age > heartbeat_s:
            seen = f"{age / 60:.0f} min ago" if age is not None else "never"
            conditions.append(
                Condition(
                    key=f"daemon:{daemon}",
                    severity=ERROR,
                    title=f"Dagster daemon {daemon}: last heartbeat {seen}",
                    body="schedules, sensors or queued runs it serves are not being handled: "
                    "check the `dagster-daemon` process (or `mltrading ui`)",
                )
            )
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=failures)
        if len(ticks) == failures and all(t.status == TickStatus.FAILURE for t in ticks):
            error = ticks[0].error.message.strip() if ticks[0].error else "no error recorded"
            conditions.append(
                Condition(
                    key=f"instigator_failing:{state.instigator_name}",
                    severity=ERROR,
                    title=f"{state.instigator_type.value.lower()} {state.instigator_name}: "
                    f"the last {failures} ticks failed",
                    body=error[:1000],
                )
            )
    return conditions


def model_decisions(
    conn: sa.Connection, after_id: int | None, now: pd.Timestamp, lookback: dt.timedelta
) -> tuple[list[Condition], int | None]:
    """Promotions, refusals and rollbacks of the model logged since ``after_id`` (the first
    evaluation looks back ``lookback`` only)."""
    rows = conn.execute(
        sa.text(
            "SELECT id, run_id, partitions, status, notes, logged_at FROM public.system_logs "
            "WHERE job_name = 'model_promotion' AND (id > :after OR (:after < 0 AND "
            "logged_at >= :since)) ORDER BY id"
        ),
        {"after": after_id if after_id is not None else -1, "since": now - lookback},
    ).all()
    events = [
        Condition(
            key=f"model:{row.run_id}",
            severity=INFO,
            title=f"model {row.partitions}: {row.status.lower().replace('_', ' ')}",
            body=row.notes or "",
        )
        for row in rows
    ]
    return events, (rows[-1].id if rows else after_id)
