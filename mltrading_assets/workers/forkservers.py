"""The forkservers a run's processes come from: the one that forked the run, shared.

A run forked from a forkserver of ours (the code server's, a command's) executes its steps
with the multiprocess executor, which asks multiprocessing for a forkserver of its own:
CPython starts one per process that asks (a fresh interpreter importing Dagster, pandas and
the definitions, ~2 s of CPU), although the run's process is the child of one that has all
of that loaded, whose address it inherits. ``share_with_children``, run in a forkserver as
it loads, lets the processes it forks start theirs from it: a run's steps are its siblings,
forked from loaded code; each still watches its run (``lifeline`` follows
``multiprocessing.parent_process()``), and its run still hears its exit code. Should the
server be gone, a process starts its own as before.

A process whose children must die with it (a step's symbol workers, killed by the kernel
when their parent exits) calls ``start_own`` first: forked by the shared server, their parent
would be the server.

CPython internals (3.11: the forkserver module's ``_forkserver``, its address set in
``main`` before any fork, its alive pipe handed to each child in ``_serve_one``);
test_dead_runs pins them.
"""

import multiprocessing.forkserver
import os
from multiprocessing import resource_tracker

import psutil


def share_with_children() -> None:
    """In a forkserver, as it loads: let each process it forks start its own processes
    from it too, while it runs."""
    server = multiprocessing.forkserver._forkserver  # noqa: SLF001
    if getattr(server, "shared_with_children", False):
        return
    start_own_server = server.ensure_running
    server_pid = os.getpid()

    def ensure_running() -> None:
        if _inherited(server) and psutil.pid_exists(server_pid):
            resource_tracker.ensure_running()
            return
        start_own()
        start_own_server()

    server.ensure_running = ensure_running
    server.shared_with_children = True


def start_own() -> None:
    """From now on, start this process's children from a forkserver of its own (started
    when first needed), not from the one it inherited."""
    server = multiprocessing.forkserver._forkserver  # noqa: SLF001
    if _inherited(server):
        os.close(server._forkserver_alive_fd)  # noqa: SLF001
        server._forkserver_alive_fd = server._forkserver_address = None  # noqa: SLF001


def _inherited(server) -> bool:
    # A forkserver's child: the address and alive pipe its server gave it, no server of its
    # own started.
    return (
        server._forkserver_pid is None  # noqa: SLF001
        and server._forkserver_alive_fd is not None  # noqa: SLF001
        and server._forkserver_address is not None  # noqa: SLF001
    )
