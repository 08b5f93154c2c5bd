"""The module a worker host's Celery loads (``celery -A mltrading_assets.lib.celery_worker``,
started by ``mltrading worker``): the executor's app with dagster-celery's step task."""

import importlib

from dagster_celery.tasks import create_task

from mltrading_assets.lib.distributed import celery_app
from mltrading_assets.lib.launching import DEFINITIONS_MODULE

app = celery_app()
execute_plan = create_task(app)
# Loaded by name (this layer sits below the definitions) once, when the worker starts: the
# first step would otherwise pay ~6 s of imports.
importlib.import_module(DEFINITIONS_MODULE)
