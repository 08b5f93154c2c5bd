"""Shared body of everything that processes symbols inside one run, each symbol isolated.

Each symbol that succeeds is recorded as a materialization of its own partition, with its
own metadata; failed symbols are named in a ``Failure`` at the end, which leaves their
partitions FAILED in the UI (and the good ones materialized) so a re-run picks them up.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.storage.tags import (  # Dagster's own tag names (1.13.27)
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from mltrading_assets import trading_calendar
from mltrading_assets.lib.batched_events import MaterializationBatches
from mltrading_assets.lib.check_executions import withdraw_planned_checks
from mltrading_assets.lib.dead_runs import tag_run_process
from mltrading_assets.lib.distributed import stop_when_run_ends
from mltrading_assets.lib.resources import BarSourceResource, PostgresResource, ProcessingResource
from mltrading_assets.names import MetadataKeys, RunTags
from mltrading_assets.sources import InvalidSymbolError, validate_symbol
from mltrading_assets.workers.harness import WorkSpec, init_worker
from mltrading_assets.workers.hosts import host_name
from mltrading_assets.workers.isolation import FailureKind, SymbolOutcome, run_isolated
from mltrading_assets.workers.lifeline import exit_with_orchestrator
from mltrading_assets.workers.slots import RequestSlots


@dataclass(frozen=True)
class BatchResult:
    succeeded: list[str]
    failures: list[SymbolOutcome]
    # Materializations not logged yet (``record_at_end``): the caller flushes them.
    pending: MaterializationBatches | None = None


MARKDOWN_DETAILS = (MetadataKeys.CHART, MetadataKeys.LATEST_VALUES)


def _metadata(details: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key, value in details.items():
        if value is None:
            continue
        if key in (MetadataKeys.FIRST_BAR, MetadataKeys.LAST_BAR):
            metadata[key] = dg.MetadataValue.timestamp(pd.Timestamp(value))
        elif key in MARKDOWN_DETAILS:
            metadata[key] = dg.MetadataValue.md(value)
        else:
            metadata[key] = value
    return metadata


def checked_partition_symbols(context: dg.AssetExecutionContext) -> list[str]:
    """The run's symbols, refusing an empty range and keys that are not valid symbols."""
    try:
        symbols = list(context.partition_keys)
    except dg.DagsterInvalidInvocationError:
        # The run's partition was deleted after it was launched (Dagster then cannot resolve
        # the range): judge the key the run names, so the failure says what was wrong.
        symbols = _named_partition(context)
    if not symbols:
        # A reversed partition range resolves to zero keys without complaint.
        raise dg.Failure("this run selected no symbol partitions (empty or reversed range)")
    # Dagster does not validate partition keys logged with materializations: we do.
    bad: dict[str, str] = {}
    for symbol in symbols:
        try:
            validate_symbol(symbol)
        except InvalidSymbolError as exc:
            bad[symbol] = str(exc)
    if bad:
        # Their checks cannot run either: no planned execution may outlive the partition.
        withdraw_planned_checks(context.instance, context.run_id, list(bad))
        raise dg.Failure(
            "invalid symbol partitions (symbol_universe_sensor removes them within a minute): "
            + "; ".join(bad.values()),
            allow_retries=False,
        )
    return symbols


def _named_partition(context: dg.AssetExecutionContext) -> list[str]:
    tags = context.run.tags
    first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    key = tags.get(PARTITION_NAME_TAG) or (first if first == last else None)
    if key is None:
        raise dg.Failure(
            f"partitions of this run's range {first}..{last} were removed after it was "
            "launched; launch it again for the symbols that remain",
            allow_retries=False,
        )
    try:
        validate_symbol(key)
    except InvalidSymbolError:
        return [key]  # the caller says why
    raise dg.Failure(
        f"partition {key} was removed after this run was launched (`mltrading symbols add "
        f"{key}` adds it back)",
        allow_retries=False,
    )


def process_symbols(
    context: dg.OpExecutionContext,
    task: Callable[[str], dict[str, Any]],
    symbols: list[str],
    asset_key: dg.AssetKey,
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
    *,
    full_refresh: bool = False,
    workers: int | None = None,
    record_at_end: bool = False,
) -> BatchResult:
    """Run ``task`` for every symbol in isolated workers; record each success as a
    materialization of ``asset_key``'s partition for that symbol.

    With ``record_at_end`` the materializations are held and returned in ``pending`` (an
    interrupted step still logs them, so no symbol done is lost)."""
    spec = WorkSpec(
        database_url=database.url,
        source=source.source_config(),
        history_days=source.history_days,
        overlap_days=source.overlap_days,
        feature_set=processing.feature_set,
        full_refresh=full_refresh,
        charts=processing.charts,
        charts_url=processing.charts_url,
        database_outage_seconds=processing.database_outage_seconds,
    )
    # One worker per core unless the caller knows better (a network-bound bar source).
    workers = min(len(symbols), workers or processing.worker_count())
    context.log.info(
        f"{asset_key.to_user_string()}: {len(symbols)} symbols ({symbols[0]} … {symbols[-1]}) "
        f"from source {source.kind!r}, {workers} worker processes"
        + (", full refresh" if full_refresh else "")
    )
    succeeded: list[str] = []
    failures: list[SymbolOutcome] = []
    no_bars: list[str] = []
    rebased: list[str] = []
    rows = 0
    step = max(1, len(symbols) // 10)
    try:
        # A source that cannot be built would break every worker as it starts (the reason
        # only on stderr): fail the step here, saying why.
        source.build()
    except ValueError as exc:
        raise dg.Failure(f"the bar source is misconfigured: {exc}", allow_retries=False) from None
    source.preload()
    trading_calendar.warm()
    tag_run_process(context, exit_with_orchestrator())
    host = host_name()
    context.instance.add_run_tags(context.run_id, {RunTags.step_host(context.op.name): host})
    # Requests in flight across this step's workers (or hosts), whatever their number.
    try:
        request_slots = source.request_slots(database.url)
    except ValueError as exc:
        raise dg.Failure(f"the bar source is misconfigured: {exc}", allow_retries=False) from None
    outcomes = run_isolated(
        task,
        symbols,
        initializer=init_worker,
        initargs=(spec, request_slots),
        workers=workers,
        timeout_seconds=processing.symbol_timeout_seconds,
        max_tasks=processing.max_symbols_per_worker,
        start_method=processing.start_method,
    )
    batches = MaterializationBatches(context, hold=record_at_end)
    # On a worker host: stop when the run is terminated (no orchestrator here to watch).
    with stop_when_run_ends(context.instance, context.run_id):
        try:
            for done, outcome in enumerate(outcomes, start=1):
                if outcome.ok:
                    succeeded.append(outcome.symbol)
                    if MetadataKeys.NO_BARS in outcome.details:
                        no_bars.append(outcome.symbol)
                    if MetadataKeys.REBASED in outcome.details:
                        # Named on the run as it happens (a split is rare): the run's log
                        # sensor reads the notes of these symbols only, and the runs list can
                        # be filtered by the tag.
                        rebased.append(outcome.symbol)
                        context.instance.add_run_tags(
                            context.run_id, {RunTags.REBASED: ", ".join(rebased)}
                        )
                    rows += int(outcome.details.get(MetadataKeys.ROWS_WRITTEN, 0))
                    batches.add(
                        dg.AssetMaterialization(
                            asset_key=asset_key,
                            partition=outcome.symbol,
                            metadata={**_metadata(outcome.details), MetadataKeys.HOST: host},
                        )
                    )
                else:
                    failures.append(outcome)
                    context.log.error(f"{outcome.symbol} failed ({outcome.kind}): {outcome.error}")
                    if outcome.kind == FailureKind.DATABASE:
                        # Every other symbol would wait out the same outage: stop here.
                        break
                if done % step == 0 or done == len(symbols):
                    if not record_at_end:
                        batches.flush()
                    context.log.info(
                        f"{done}/{len(symbols)} symbols done, {len(failures)} failed, "
                        f"{rows} rows written"
                    )
        except BaseException:
            # Symbols already written are recorded even if the step is being torn down.
            batches.flush()
            raise
        finally:
            # Interrupted (Ctrl-C, SIGTERM, a failure): start no further symbol.
            outcomes.close()
            if isinstance(request_slots, RequestSlots):
                request_slots.remove()
    if not record_at_end:
        batches.flush()
    if no_bars:
        context.log.warning(
            f"{len(no_bars)} symbols: the source has no bars in their window (see each "
            f"partition's {MetadataKeys.NO_BARS} metadata): {', '.join(no_bars[:20])}"
            + (" …" if len(no_bars) > 20 else "")
        )
    return BatchResult(
        succeeded=succeeded, failures=failures, pending=batches if record_at_end else None
    )


def raise_for_failures(failures: list[SymbolOutcome], total: int) -> None:
    """Fail the step naming every failed symbol; retry only if all failures are transient."""
    if not failures:
        return
    down = next((f for f in failures if f.kind == FailureKind.DATABASE), None)
    if down is not None:
        # One line a user can act on, not a list of symbols that were never the problem.
        raise dg.Failure(
            description=(
                f"stopped: the database stayed unreachable ({down.error}); the symbols "
                "not done by then were not started or were rolled back: rerun once "
                "PostgreSQL is back"
            ),
            allow_retries=False,
        )
    kinds = Counter(f.kind for f in failures)
    raise dg.Failure(
        description=(
            f"{len(failures)} of {total} symbols failed "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items())}): "
            + "; ".join(f"{f.symbol}: {f.error}" for f in failures[:20])
            + (f"; … and {len(failures) - 20} more" if len(failures) > 20 else "")
        ),
        metadata={
            "failed_symbols": dg.MetadataValue.json({f.symbol: f.error for f in failures}),
            "succeeded": total - len(failures),
        },
        allow_retries=all(FailureKind(kind).retryable for kind in kinds),
    )


def _checks_in_run(context: dg.AssetExecutionContext) -> bool:
    """Whether this run executes checks of the asset: they follow its result, and without
    one they would be SKIPPED after every UI materialization.

    The job's checks come from its asset layer (a Dagster internal, 1.13.27: the public
    context lists only checks defined inside the asset); a UI run narrows them with its
    check selection. Pinned by test_a_ui_materialization_runs_the_assets_checks_for_its_symbol.
    """
    checks = context.job_def.asset_layer.asset_graph.asset_check_keys
    if context.run.asset_check_selection is not None:
        checks = checks & context.run.asset_check_selection
    return any(check.asset_key == context.asset_key for check in checks)


def materialize_partitions(
    context: dg.AssetExecutionContext,
    task: Callable[[str], dict[str, Any]],
    database: PostgresResource,
    source: BarSourceResource,
    processing: ProcessingResource,
    workers: int | None = None,
):
    """Asset body: process the run's symbol partitions, fail naming the ones that failed.

    When every symbol succeeded and the run also selected a downstream asset (a UI
    "Materialize all" or backfill of both assets) or the asset's checks (any UI
    materialization), the step yields a result for the whole range, so those steps run
    instead of being skipped and the backfill ends green.
    Dagster records that result as one materialization per partition, without metadata;
    each symbol's own materialization, with its metadata (chart, rows written, ...), is
    logged after it, so it is the latest the UI shows. A partly failed range yields no
    result: its good symbols are recorded, the step fails naming the others, and the
    features sensor follows up for the good ones.
    """
    symbols = checked_partition_symbols(context)
    # Runs of market_data_job or features_job carry no asset selection (their job is the
    # selection); UI launches and backfills do. Only a run that selected another asset too
    # may need the range's result (the features step then yields one it does not need, in
    # UI runs only): elsewhere it would cost an event per symbol (~3.5 ms each, +7 s on a
    # 1,000-symbol refresh) for nothing, and hold back per-symbol progress in the UI.
    selection = context.run.asset_selection or ()
    downstream_in_run = any(key != context.asset_key for key in selection) or _checks_in_run(
        context
    )
    result = process_symbols(
        context,
        task,
        symbols,
        context.asset_key,
        database,
        source,
        processing,
        workers=workers,
        record_at_end=downstream_in_run,
    )
    if result.failures:
        if result.pending is not None:
            result.pending.flush()
        if downstream_in_run:
            # The checks this run planned will not run (the step fails): withdrawn, each
            # check's latest execution stays its last real one, not "Execution failed".
            withdraw_planned_checks(context.instance, context.run_id, symbols)
        raise_for_failures(result.failures, len(symbols))
    if downstream_in_run:
        yield dg.MaterializeResult()
        result.pending.flush()
