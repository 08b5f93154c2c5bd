"""The module a worker host's Celery loads (``celery -A mltrading_assets.lib.celery_worker``,
started by ``mltrading worker``): the executor's app with dagster-celery's step task."""

import importlib
import logging
import multiprocessing
from typing import Any

from celery.backends.database import DatabaseBackend
from celery.signals import task_postrun, worker_process_init
from celery.worker.request import Request
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from mltrading_assets.lib.dagster_storage import close_kept_connections
from mltrading_assets.lib.distributed import celery_app
from mltrading_assets.lib.launching import DEFINITIONS_MODULE


class _KilledWhenCancelled(Request):
    """A step whose worker lost the broker (a restart) is cancelled, so that the broker's
    second delivery of its unacknowledged task is the only copy that runs. Celery cancels
    with SIGTERM, which Dagster turns into an interrupt inside the step, and the step's
    RetryPolicy into a retry the orchestrator submits: two copies of the step. Killed, the
    step leaves what a killed host leaves (its symbols done stay done, the rest is redone)."""

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        super().cancel(pool, signal="SIGKILL", emit_retry=emit_retry)


app = celery_app()
execute_plan = create_task(app, Request=_KilledWhenCancelled)
# Whole runs, for an instance whose run launcher is dagster-celery's CeleryRunLauncher
# (MLTRADING_CELERY_MODE=runs); unused otherwise.
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
# Loaded by name (this layer sits below the definitions) once, when the worker starts: the
# first step would otherwise pay ~6 s of imports.
importlib.import_module(DEFINITIONS_MODULE)


class _StepResultUnprinted(logging.Filter):
    """Celery logs each task's return value as it succeeds: for a step, a kilobyte of
    serialized Dagster events (the run's event log holds them), on every step's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": "its events are in the run's log"}
        return True


logging.getLogger("celery.app.trace").addFilter(_StepResultUnprinted())


@worker_process_init.connect
def _may_start_processes(**_) -> None:
    """Let the step in this pool child start its per-symbol worker processes.

    Celery marks its pool children daemonic, and multiprocessing refuses to start a process
    from a daemonic one (a CPython internal, ``_config["daemon"]``, checked by
    ``BaseProcess.start``). The rule keeps orphans from outliving a daemonic parent; our
    symbol workers die with their parent anyway (``PR_SET_PDEATHSIG``). test_scale_out
    runs symbol pools inside these children, so a change upstream fails it.
    """
    config = multiprocessing.current_process()._config
    config["daemon"] = False
    # A whole run here (MLTRADING_CELERY_MODE=runs) starts its steps through a forkserver,
    # which pickles this process's key: billiard's key type refuses to be pickled.
    config["authkey"] = multiprocessing.process.AuthenticationString(bytes(config["authkey"]))


@task_postrun.connect
def _close_the_steps_connections(**_) -> None:
    """The step's Dagster instance is done with once its task returns (see
    ``close_kept_connections``), and so is the result store once the task's result is in it
    (Celery keeps that engine's connection open in a pool child): a pool child holds no
    connection between steps."""
    close_kept_connections()
    if isinstance(app.backend, DatabaseBackend):
        # A result nobody read (a step revoked, or finished twice after a host's link was
        # cut) goes after ``result_expires``: Celery leaves that to its beat, which we do
        # not run.
        app.backend.cleanup()
        app.backend.session_manager.invalidate(app.backend.url)
