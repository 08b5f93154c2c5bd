"""Launch runs from Python (the CLI, the benchmark, tests) through the real executor: each
run's steps go through the multiprocess executor, exactly as in production, and symbols go
in ranged runs of a few hundred."""

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg
import psutil
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from mltrading_assets.lib.dead_runs import Reaped, process_tags, reap_dead_runs
from mltrading_assets.lib.partitions import symbol_partitions
from mltrading_assets.lib.ranged_runs import contiguous_ranges, range_tags
from mltrading_assets.lib.run_processes import DEFINITIONS_MODULE
from mltrading_assets.lib.run_processes import context as run_process_context
from mltrading_assets.names import CHAMPION_MODEL_ASSET
from mltrading_assets.paths import PROJECT_ROOT

# The code location of workspace.yaml (and of pyproject's [tool.dagster]): the module and
# the name of its Definitions. Named, not imported: this layer sits below the definitions,
# and Dagster loads them by name in every process a run starts anyway.
CODE_LOCATION = "mltrading_assets"
DEFINITIONS_ATTRIBUTE = "defs"

# What `materialize` and `refresh` can run over symbols, by the name a caller uses.
JOBS = {
    "market_data": "market_data_job",
    "features": "features_job",
    "checks": "quality_checks_job",
    "predictions": "model_predictions_job",
}


def reconstructable_job(job_name: str) -> ReconstructableJob:
    """``job_name`` of the project's Definitions, as every process of a run reloads it."""
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, working_directory=str(PROJECT_ROOT)
    )
    return repository.get_reconstructable_job(job_name)


def workspace_origin(job_name: str) -> RemoteJobOrigin:
    """Where the UI finds ``job_name``: the code location of workspace.yaml."""
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(PROJECT_ROOT),
        ),
        location_name=CODE_LOCATION,
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)


def execute_job(
    instance: dg.DagsterInstance, job_name: str, tags: dict[str, str], run_config: dict
) -> dg.JobExecutionResult:
    """``dg.execute_job``, but the run names the code location its job comes from.

    Runs of ``dg.execute_job`` carry no such origin, and the UI's Overview timeline lists only
    runs it can place in a code location: terminal runs were missing there. Built from
    Dagster's internals of 1.13.27 (create_run_for_job with a remote_job_origin, then
    execute_run), as dg.execute_job does; pinned by test_cli_runs_name_their_code_location.
    """
    recon = reconstructable_job(job_name)
    run = instance.create_run_for_job(
        job_def=recon.get_definition(),
        run_config=run_config,
        tags=tags,
        job_code_origin=recon.get_python_origin(),
        remote_job_origin=workspace_origin(job_name),
    )
    return execute_run(recon, run, instance)


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    first: str
    last: str
    success: bool


class RunInterrupted(Exception):
    """Ctrl-C, SIGTERM or a terminate from the UI stopped a run: no further run is started."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(summary.run_id)
        self.summary = summary


# Written by Dagster's multiprocess executor (1.13.27) when it forwards an interrupt to its
# step processes; execute_job then returns a failed result instead of raising. test_faults
# pins it.
INTERRUPT_MESSAGE = "received termination signal"


def was_interrupted(instance: dg.DagsterInstance, run_id: str) -> bool:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=1000
    ).records
    return any(INTERRUPT_MESSAGE in (r.event_log_entry.message or "") for r in records)


def _ranges(
    instance: dg.DagsterInstance, symbols: list[str], symbols_per_run: int | None
) -> list[tuple[str, str]]:
    ordered = instance.get_dynamic_partitions(symbol_partitions.name)
    unknown = sorted(set(symbols) - set(ordered))
    if unknown:
        raise ValueError(f"not registered as partitions: {', '.join(unknown)}")
    return contiguous_ranges(ordered, symbols, symbols_per_run)


def _execute(
    instance: dg.DagsterInstance,
    asset: str,
    first: str,
    last: str,
    tags: dict[str, str] | None,
    run_config: dict | None,
    log_level: str,
) -> RunSummary:
    with execute_job(
        instance,
        JOBS[asset],
        {**range_tags(first, last), **process_tags(), **(tags or {})},
        {**(run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}},
    ) as result:
        summary = RunSummary(result.run_id, first, last, result.success)
    if not summary.success and (
        was_interrupted(instance, summary.run_id) or _terminated(instance, summary.run_id)
    ):
        raise RunInterrupted(summary)
    return summary


def _terminated(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Terminated from the UI while this process orchestrated it: the user stopped it."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status == dg.DagsterRunStatus.CANCELED


def materialize(
    instance: dg.DagsterInstance,
    asset: str,
    symbols: list[str],
    symbols_per_run: int | None = None,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    log_level: str = "INFO",
    runs_at_once: int = 1,
) -> list[RunSummary]:
    """Materialize ``asset`` ("market_data" or "features"), or run the quality "checks", for
    ``symbols`` in ranged runs, ``runs_at_once`` ranges at a time (worker hosts to keep
    busy).

    ``run_config`` replaces a resource's whole configuration (e.g. a pinned synthetic clock).
    """
    ranges = _ranges(instance, symbols, symbols_per_run)
    if runs_at_once > 1 and len(ranges) > 1:
        return _in_children(
            _execute_in_child, ranges, runs_at_once, asset, run_config, log_level, tags
        )
    return [
        _execute(instance, asset, first, last, tags, run_config, log_level)
        for first, last in ranges
    ]


def _execute_in_child(
    first: str,
    last: str,
    asset: str,
    run_config: dict | None,
    log_level: str,
    tags: dict[str, str] | None = None,
) -> RunSummary:
    with dg.DagsterInstance.get() as instance:
        return _execute(instance, asset, first, last, tags, run_config, log_level)


def _refresh_in_child(
    first: str, last: str, run_config: dict | None, log_level: str
) -> tuple[RunSummary, RunSummary]:
    with dg.DagsterInstance.get() as instance:
        bars = _execute(instance, "market_data", first, last, None, run_config, log_level)
        return bars, _execute(instance, "features", first, last, None, run_config, log_level)


def _in_children(
    function: Callable, ranges: list[tuple[str, str]], runs_at_once: int, *args: Any
) -> list:
    """``function(first, last, *args)`` for each range, ``runs_at_once`` ranges at a time,
    each in a process of its own (``execute_job`` is not thread-safe)."""
    with (
        ProcessPoolExecutor(
            min(runs_at_once, len(ranges)), mp_context=run_process_context()
        ) as pool,
        _interrupt_children_on(RunInterrupted),
    ):
        return list(
            pool.map(function, *zip(*ranges, strict=True), *([arg] * len(ranges) for arg in args))
        )


def _refresh_ranges_at_once(
    ranges: list[tuple[str, str]], runs_at_once: int, run_config: dict | None, log_level: str
) -> dict[str, list[RunSummary]]:
    """Each range's bars then its features, ``runs_at_once`` ranges at a time."""
    done = _in_children(_refresh_in_child, ranges, runs_at_once, run_config, log_level)
    return {"market_data": [bars for bars, _ in done], "features": [f for _, f in done]}


def refresh(
    instance: dg.DagsterInstance,
    symbols: list[str],
    symbols_per_run: int | None = None,
    run_config: dict | None = None,
    log_level: str = "INFO",
    runs_at_once: int = 1,
) -> dict[str, list[RunSummary]]:
    """Bars, then features, for ``symbols``, the way the schedule and the sensor run them:
    each range's features run starts as soon as its bars are in, alongside the next range's
    bars (``dagster.yaml`` lets two runs go at once). A partly failed bars run is still
    followed, for the symbols it did write. With ``runs_at_once`` > 1 (worker hosts to keep
    busy), that many ranges go at once, each bars then features.

    Those overlapping features runs go to a second process: ``execute_job`` is not
    thread-safe (two runs in one process deadlocked in Dagster's logging set-up).
    """
    ranges = _ranges(instance, symbols, symbols_per_run)
    if runs_at_once > 1 and len(ranges) > 1:
        return _refresh_ranges_at_once(ranges, runs_at_once, run_config, log_level)
    data: list[RunSummary] = []
    overlapped = []
    with contextlib.ExitStack() as stack, _interrupt_children_on(RunInterrupted):
        for index, (first, last) in enumerate(ranges):
            data.append(_execute(instance, "market_data", first, last, None, run_config, log_level))
            if index == len(ranges) - 1:
                break  # nothing left to overlap with: run it here, without a start-up
            if not overlapped:
                child = stack.enter_context(
                    ProcessPoolExecutor(1, mp_context=run_process_context())
                )
            overlapped.append(
                child.submit(_execute_in_child, first, last, "features", run_config, log_level)
            )
        last_features = (
            [_execute(instance, "features", *ranges[-1], None, run_config, log_level)]
            if ranges
            else []
        )
        features = [future.result() for future in overlapped] + last_features
    return {"market_data": data, "features": features}


@contextlib.contextmanager
def _interrupt_children_on(*errors: type[BaseException]):
    """Pass an interrupt on to the runs in other processes (a SIGTERM reached only this one)
    before waiting for them to wind down. They are the children of this process's
    forkserver (Dagster's step processes are their own forkserver's)."""
    try:
        yield
    except errors:
        for child in psutil.Process().children():
            if "multiprocessing.forkserver" in " ".join(child.cmdline()):
                for run_process in child.children():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(run_process.pid, signal.SIGINT)
        raise


def has_champion(instance: dg.DagsterInstance) -> bool:
    return instance.get_latest_materialization_event(dg.AssetKey(CHAMPION_MODEL_ASSET)) is not None


# A sensor daemon that beat this recently is taken to be running.
DAEMON_ALIVE_S = 120.0
PREDICT_ON_PROMOTION_SENSOR = "predictions_after_promotion"


def daemon_predicts_on_promotion(instance: dg.DagsterInstance) -> bool:
    """Whether a running daemon will predict every symbol with a new champion by itself:
    its sensor daemon beat within ``DAEMON_ALIVE_S`` and the promotion sensor is not off."""
    from dagster._core.scheduler.instigation import InstigatorStatus

    beat = instance.get_daemon_heartbeats().get("SENSOR")
    if beat is None or time.time() - beat.timestamp > DAEMON_ALIVE_S:
        return False
    states = [
        state
        for state in instance.all_instigator_state()
        if state.instigator_name == PREDICT_ON_PROMOTION_SENSOR
    ]
    return not any(state.status == InstigatorStatus.STOPPED for state in states)


def predict_with_new_champion(instance: dg.DagsterInstance, symbols: list[str]):
    """After a champion changed outside a run (a command): predictions for ``symbols`` now,
    unless a running daemon's promotion sensor does it (None then)."""
    if daemon_predicts_on_promotion(instance):
        return None
    return materialize(instance, "predictions", symbols)


def materialize_symbols(
    instance: dg.DagsterInstance,
    symbols: list[str],
    assets: list[str],
    on_reaped: Callable[[Reaped], None] = lambda reaped: None,
    runs_at_once: int = 1,
) -> dict[str, list[RunSummary]]:
    """``assets`` ("market_data", "features") for ``symbols``, as the daemon would run them:
    both as the hourly refresh does, and predictions after new features while a champion
    exists (as the predictions sensor does). Runs whose process died are reaped first: one
    would hold the bar pool's slot and make these wait for ever (``on_reaped`` hears of it).
    ``runs_at_once`` ranges are refreshed at a time (worker hosts to keep busy)."""
    on_reaped(reap_dead_runs(instance))
    if assets == ["market_data", "features"]:
        runs = refresh(instance, symbols, runs_at_once=runs_at_once)
    else:
        runs = {
            asset: materialize(instance, asset, symbols, runs_at_once=runs_at_once)
            for asset in assets
        }
    if "features" in assets and has_champion(instance):
        runs["predictions"] = materialize(instance, "predictions", symbols)
    return runs


def rebuild_all(
    instance: dg.DagsterInstance, run_config: dict | None = None, log_level: str = "INFO"
) -> RunSummary:
    """Run the complete rebuild (a year of bars and all features, every active symbol)."""
    return _execute_whole(instance, "rebuild_all_job", run_config, log_level)


def train_models(
    instance: dg.DagsterInstance, run_config: dict | None = None, log_level: str = "INFO"
) -> RunSummary:
    """Retrain: dataset, candidate, evaluation, and the champion if the gate passes (a
    refused candidate fails the run at the gate)."""
    return _execute_whole(instance, "model_training_job", run_config, log_level)


def _execute_whole(
    instance: dg.DagsterInstance, job_name: str, run_config: dict | None, log_level: str
) -> RunSummary:
    """A run of an unpartitioned job."""
    with execute_job(
        instance,
        job_name,
        process_tags(),
        {**(run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}},
    ) as result:
        return RunSummary(result.run_id, "", "", result.success)
