"""Runs whose steps go to worker hosts through Celery (dagster-celery), on when
``MLTRADING_CELERY_BROKER`` is set; otherwise every step runs on this machine.

Each step is one Celery task: the run's orchestrator (Dagster's run worker, or the command
that launched the run) stays where it was launched and waits, and a worker host (``mltrading
worker``) executes the step in a pool child of its own, where the step's per-symbol worker
pool starts as it does on one machine. Work spreads across hosts because a tick or a backfill is
many ranged runs, whose steps the hosts take one at a time from the queue.

What we add to dagster-celery's executor, and why:
- the orchestrator names itself on the run (host and pid), so the reaper of its own host,
  and only that one, can tell when it died;
- a step sent to a queue no worker serves would wait for ever: the run fails at once,
  naming the queue;
- Celery settings that make a killed host's step run again elsewhere: the task is
  acknowledged when it ends, not when it starts, so the broker hands a task whose worker
  died (connection closed, or heartbeats missed after a cut link) to another worker.
"""

import contextlib
import ctypes
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import celery
import dagster as dg
import sqlalchemy as sa
from celery.exceptions import DuplicateTaskNameWarning
from celery.result import AsyncResult
from dagster._core.execution.retries import RetryMode  # dagster-celery's own argument type
from dagster_celery import core_execution_loop
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from mltrading_assets.db.engine import DAGSTER_SCHEMA
from mltrading_assets.lib.dagster_storage import DAGSTER_URL_VARIABLE
from mltrading_assets.lib.dead_runs import process_tags
from mltrading_assets.names import BROKER_VARIABLE

# dagster-celery registers its step task again for every step it sends (same name, same
# body): a warning per step in the run's terminal, telling a user nothing.
warnings.filterwarnings("ignore", category=DuplicateTaskNameWarning)

BACKEND_VARIABLE = "MLTRADING_CELERY_BACKEND"
DATABASE_URL_VARIABLE = "MLTRADING_DATABASE_URL"
# What goes to the worker hosts: each step (dagster-celery's executor, the default), or each
# whole run (``runs``: dagster-celery's CeleryRunLauncher, set in the instance's dagster.yaml,
# with the multiprocess executor inside the run). Measured side by side in the README; the
# run launcher is there to be measured, not recommended.
MODE_VARIABLE = "MLTRADING_CELERY_MODE"
DEFAULT_QUEUE = "dagster"
# Steps of each kind go to this queue (MLTRADING_QUEUE_BARS, ...); all to one by default.
QUEUE_VARIABLES = {
    "bars": "MLTRADING_QUEUE_BARS",
    "features": "MLTRADING_QUEUE_FEATURES",
    "training": "MLTRADING_QUEUE_TRAINING",
}

CELERY_SETTINGS: dict[str, Any] = {
    # Acknowledged when the step ends: a task whose worker died is delivered again.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # A worker holds only the step it runs; the next one stays free for another host.
    "worker_prefetch_multiplier": 1,
    # A running step is marked STARTED in the result store. A revoke is broadcast to every
    # worker, and one not running the step marks a step still PENDING as revoked: its
    # orchestrator would end the run while the host still ran the step.
    "task_track_started": True,
    # A host whose link is cut is given up by the broker within ~30 s.
    "broker_heartbeat": 10,
    "broker_connection_retry_on_startup": True,
    # The reply queues of the questions `mltrading doctor` asks the workers go after a minute.
    "control_queue_expires": 60,
    # A worker that loses the broker (a restart) stops the step it runs: the broker delivers
    # that unacknowledged task again once it is back, and two copies of one step must not
    # write the same run at once.
    "worker_cancel_long_running_tasks_on_connection_loss": True,
    # A step submitted while the broker restarts waits for it (~1 minute), not 0.6 s.
    "task_publish_retry_policy": {
        "max_retries": 30,
        "interval_start": 0.5,
        "interval_step": 0.5,
        "interval_max": 2,
    },
}


# Celery's result tables sit beside Dagster's, in the schema its role owns.
DATABASE_BACKEND_SETTINGS: dict[str, Any] = {
    "database_table_schemas": {"task": DAGSTER_SCHEMA, "group": DAGSTER_SCHEMA},
    # The orchestrator deletes each result once read; one never read goes after a day.
    "result_expires": 86400,
}


def enabled() -> bool:
    return bool(os.environ.get(BROKER_VARIABLE))


def sends_steps() -> bool:
    """Whether this code location's runs hand their steps to worker hosts."""
    return enabled() and os.environ.get(MODE_VARIABLE, "steps") != "runs"


def queue_for(kind: str) -> str:
    return os.environ.get(QUEUE_VARIABLES[kind]) or DEFAULT_QUEUE


def queue_tags(kind: str) -> dict[str, str]:
    """Op tags routing a step of ``kind`` to its queue (ignored on one machine)."""
    return {DAGSTER_CELERY_QUEUE_TAG: queue_for(kind)}


def redacted_broker() -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(os.environ[BROKER_VARIABLE])


def result_backend() -> str:
    """Where steps' results wait for their orchestrator: ``MLTRADING_CELERY_BACKEND``, else
    the PostgreSQL that holds Dagster's storage (no component to add). Celery's default,
    ``rpc://``, sends them back through the broker on a queue that lives as long as the
    orchestrator's connection: a broker restart lost every result in flight, and with them
    the runs waiting for them."""
    chosen = os.environ.get(BACKEND_VARIABLE)
    if chosen:
        return chosen
    url = os.environ.get(DAGSTER_URL_VARIABLE) or os.environ.get(DATABASE_URL_VARIABLE)
    if not url:
        raise RuntimeError(
            f"{BROKER_VARIABLE} is set but {DATABASE_URL_VARIABLE} is not: worker hosts need a "
            "PostgreSQL every host reaches (the embedded server is this machine's only)"
        )
    parsed = sa.make_url(url).set(drivername="postgresql+psycopg2")
    parsed = parsed.update_query_dict({"application_name": "celery_results"})
    return "db+" + parsed.render_as_string(hide_password=False)


def executor_config() -> dict[str, Any]:
    backend = result_backend()
    settings = dict(CELERY_SETTINGS)
    if backend.startswith("db+"):
        settings.update(DATABASE_BACKEND_SETTINGS)
    return {
        "broker": os.environ[BROKER_VARIABLE],
        "backend": backend,
        "config_source": settings,
    }


@cache
def celery_app():
    """The Celery app of the executor and of every worker: the same broker and settings."""
    config = executor_config()
    return make_app(
        CeleryExecutor(
            retries=RetryMode.DISABLED,
            broker=config["broker"],
            backend=config["backend"],
            config_source=config["config_source"],
        ).app_args()
    )


def served_queues(timeout: float = 2.0) -> dict[str, list[str]]:
    """Each worker that answers within ``timeout``, with the queues it consumes."""
    answers = celery_app().control.inspect(timeout=timeout).active_queues() or {}
    return {worker: sorted(q["name"] for q in queues) for worker, queues in answers.items()}


def queue_consumers(queues: set[str]) -> dict[str, int]:
    """Workers consuming each queue, as the broker counts them (busy ones included)."""
    counts = {}
    with celery_app().connection_for_write() as connection:
        # A run launched while the broker restarts waits for it, as its steps' submission does.
        connection.ensure_connection(**CELERY_SETTINGS["task_publish_retry_policy"])
        for queue in sorted(queues):
            channel = connection.channel()
            try:
                counts[queue] = channel.queue_declare(queue, passive=True).consumer_count
            except connection.channel_errors:  # no such queue: nobody ever consumed it
                counts[queue] = 0
            finally:
                with contextlib.suppress(*connection.connection_errors, *connection.channel_errors):
                    channel.close()
    return counts


def bar_workers() -> int:
    """Workers taking bar steps: how many ranges a refresh keeps going at once."""
    return max(1, queue_consumers({queue_for("bars")})[queue_for("bars")])


# dagster-celery's loop sleeps ``TICK_SECONDS`` (1 s; a global of an internal module) between
# looks at its steps' results, and once more after the last one: a run ended ~1.5 s after
# its last step, on average. A look is one primary-key read of the result store per step in
# flight. Pinned by test_the_orchestrator_looks_at_its_steps_four_times_a_second.
STEP_POLL_SECONDS = 0.25
core_execution_loop.TICK_SECONDS = STEP_POLL_SECONDS


class HostAwareCeleryExecutor(CeleryExecutor):
    def execute(self, plan_context, execution_plan):
        run = plan_context.dagster_run
        plan_context.instance.add_run_tags(run.run_id, process_tags())
        wanted = {
            step.tags.get(DAGSTER_CELERY_QUEUE_TAG, DEFAULT_QUEUE)
            for step in execution_plan.get_all_steps_in_topo_order()
            if step.key in execution_plan.step_keys_to_execute
        }
        missing = sorted(queue for queue, n in queue_consumers(wanted).items() if n == 0)
        if missing:
            raise dg.Failure(
                f"no worker serves queue {', '.join(missing)} (start one: `mltrading worker "
                f"--queues {','.join(missing)}`); the run's steps would wait for ever",
                allow_retries=False,
            )
        with _interrupt_when_terminated(plan_context.instance, run.run_id):
            yield from core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=_submit_forgetting_once_read
            )


class _ForgottenOnceRead(AsyncResult):
    """A step's result, deleted from the result backend once its orchestrator has read it:
    a stored result is needed only until then."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get(*args, **kwargs)
        finally:
            with contextlib.suppress(Exception):
                self.forget()


def _submit_forgetting_once_read(app: celery.Celery, *args: Any) -> AsyncResult:
    # dagster-celery's own submission (an internal of dagster_celery.executor, as is the
    # loop that calls it; test_scale_out runs every step through both).
    return _ForgottenOnceRead(_submit_task(app, *args).id, app=app)


@dg.executor(
    name="celery",
    config_schema=CELERY_CONFIG,
    requirements=dg.multiple_process_executor_requirements(),
)
def host_aware_celery_executor(init_context: dg.InitExecutorContext) -> HostAwareCeleryExecutor:
    config = init_context.executor_config
    return HostAwareCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),
    )


def executor() -> dg.ExecutorDefinition:
    return host_aware_celery_executor.configured(executor_config())


# A run in any of these needs nothing more from its steps: terminated, marked failed (its
# orchestrator died), or finished by another host (this host's link was cut and its step
# given to another host meanwhile).
_ENDED = (
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.CANCELED,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.SUCCESS,
)


def _interrupt(thread_id: int) -> None:
    """Raise KeyboardInterrupt in the step's thread. Not a signal: Celery's pool children
    ignore SIGINT (their parent handles Ctrl-C), so ``_thread.interrupt_main`` does nothing
    there. CPython's PyThreadState_SetAsyncExc delivers it at the step's next bytecode (the
    step wakes as each symbol ends)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(KeyboardInterrupt)
    )


@contextlib.contextmanager
def _on_run_status(
    instance: dg.DagsterInstance,
    run_id: str,
    statuses: tuple[dg.DagsterRunStatus, ...],
    act: Callable[[], None],
    poll_seconds: float,
) -> Iterator[None]:
    """Call ``act`` once, from a watching thread, if the run reaches one of ``statuses``
    before the block ends; never after it ended."""
    done = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        while not done.wait(poll_seconds):
            try:
                run = instance.get_run_by_id(run_id)
            except Exception:  # the database is away for now: the step's own retries decide
                continue
            if run is not None and run.status in statuses:
                with lock:
                    if not done.is_set():
                        act()
                return

    threading.Thread(target=watch, name="run-status-watch", daemon=True).start()
    try:
        yield
    finally:
        with lock:
            done.set()


def stop_when_run_ends(
    instance: dg.DagsterInstance, run_id: str, poll_seconds: float = 2.0
) -> contextlib.AbstractContextManager:
    """On a worker host, interrupt the step once its run has ended or is being terminated
    (from the UI, say): Celery's revoke does not stop a task already running, and the step
    cannot watch an orchestrator on another host. Elsewhere, nothing."""
    if celery.current_task is None:
        return contextlib.nullcontext()
    step_thread = threading.get_ident()
    return _on_run_status(instance, run_id, _ENDED, lambda: _interrupt(step_thread), poll_seconds)


def _interrupt_when_terminated(
    instance: dg.DagsterInstance, run_id: str, poll_seconds: float = 1.0
) -> contextlib.AbstractContextManager:
    """The orchestrator's side of a terminate: once the run is CANCELING, interrupt the
    orchestrator as Ctrl-C would, so that dagster-celery's loop revokes what is queued and
    submits nothing more (a step the terminate stopped would otherwise come back as a retry).
    Dagster captures SIGINT during execution and its loop checks for it each second; the
    signal is only sent while that capture is in place (the main thread, inside the run)."""
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    terminated = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
    return _on_run_status(
        instance, run_id, terminated, lambda: os.kill(os.getpid(), signal.SIGINT), poll_seconds
    )
