"""The module a worker host's Celery loads (``celery -A mltrading_assets.lib.celery_worker``,
started by ``mltrading worker``): the executor's app with dagster-celery's step task."""

import importlib
import logging
import multiprocessing

from celery.signals import task_postrun, worker_process_init
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from mltrading_assets.lib.dagster_storage import close_kept_connections
from mltrading_assets.lib.distributed import celery_app
from mltrading_assets.lib.launching import DEFINITIONS_MODULE

app = celery_app()
execute_plan = create_task(app)
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
    ``close_kept_connections``): a pool child holds no connection between steps."""
    close_kept_connections()
