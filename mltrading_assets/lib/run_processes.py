"""The processes a command's runs go to when several ranges run at once: each run its own
process (``execute_job`` is not thread-safe), forked from a server that has already loaded
the definitions.

A spawned process spent ~1.6–3.5 s importing Dagster and the definitions before its run
could start, after the command had spent as long on its own imports: with worker hosts that
was most of the time between the command's start and the first bar requested. Started early
(``start_early``), the server loads the code on the other core while the command does its own
set-up, and each run's process is then a fork of it. Nothing here imports Dagster: the
command starts the server before it loads anything heavy.
"""

import multiprocessing
import multiprocessing.forkserver
import os
from multiprocessing.context import BaseContext

from mltrading_assets.names import BROKER_VARIABLE

# The code location's module: every run loads it.
DEFINITIONS_MODULE = "mltrading_assets.definitions"
# What the server loads once instead: the definitions, a failure left to the runs to report.
PRELOAD_MODULE = "mltrading_assets.lib.run_process_preload"


def context() -> BaseContext:
    """The start method of a command's run processes."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload([PRELOAD_MODULE])
    return forkserver


def start_early(runs_at_once: int | None) -> bool:
    """Start the server now if this command may run several ranges at once (asked for, or
    by default with worker hosts to keep busy); True if it did. Call it once the environment
    is complete: the server and every run forked from it keep the environment it had here."""
    several = bool(os.environ.get(BROKER_VARIABLE)) if runs_at_once is None else runs_at_once > 1
    if not several:
        return False
    context()
    multiprocessing.forkserver.ensure_running()
    return True
