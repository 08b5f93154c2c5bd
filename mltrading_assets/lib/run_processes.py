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
from multiprocessing import resource_tracker
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


def share_with_children() -> None:
    """In a forkserver, as it loads: let each process it forks start its own processes
    from it too, while it runs.

    A run forked from this server (the code server's or a command's) executes its steps
    with the multiprocess executor, which asks multiprocessing for a forkserver of its own:
    CPython starts one per process that asks (a fresh interpreter importing Dagster, pandas
    and the definitions, ~2 s of CPU), although the run's process is the child of one that
    has all of that loaded, whose address it inherits. Its steps are now forked by that
    server, siblings of their run: each still watches its run (``workers.lifeline`` follows
    ``multiprocessing.parent_process()``), and its run still hears its exit code. Should the
    server be gone, a process starts its own as before. CPython internals (3.11: the
    forkserver module's ``_forkserver``, its address set in ``main`` before any fork, its
    alive pipe given to each child in ``_serve_one``); test_dead_runs pins them."""
    server = multiprocessing.forkserver._forkserver  # noqa: SLF001
    if getattr(server, "shared_with_children", False):
        return
    start_own = server.ensure_running
    server_pid = os.getpid()

    def ensure_running() -> None:
        inherited = (
            server._forkserver_pid is None  # noqa: SLF001 (none started by this process)
            and server._forkserver_alive_fd is not None  # noqa: SLF001
            and server._forkserver_address is not None  # noqa: SLF001
        )
        if inherited and _running(server_pid):
            resource_tracker.ensure_running()
            return
        if inherited:
            os.close(server._forkserver_alive_fd)  # noqa: SLF001
            server._forkserver_alive_fd = server._forkserver_address = None  # noqa: SLF001
        start_own()

    server.ensure_running = ensure_running
    server.shared_with_children = True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
