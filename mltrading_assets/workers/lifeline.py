"""No process of ours outlives the one that started it.

A run's processes form a chain: the orchestrator (``mltrading materialize``, or Dagster's run
worker) → the multiprocess executor's forkserver → a step process → its symbol workers. Killed
(``kill -9``, OOM), the orchestrator takes nothing with it: the step process keeps a handle
that keeps the forkserver alive, and it blocks on events nobody reads, so the whole chain
lingered for good, holding connections. Here each link watches the one above it:

- a step process watches the orchestrator (a thread, once a second) and kills itself when it
  is gone;
- a symbol worker asks the kernel for SIGKILL when its step process exits (Linux
  ``PR_SET_PDEATHSIG``), so its open transaction is rolled back with its connection.
"""

import ctypes
import os
import signal
import sys
import threading
import time

import psutil

_PR_SET_PDEATHSIG = 1
_watching = False


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it exited before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def _is_multiprocessing_child(process: psutil.Process) -> bool:
    # Relies on CPython's command lines for forkserver and spawn children
    # (``-c from multiprocessing.forkserver import main`` / ``multiprocessing.spawn``);
    # a forkserver's children inherit its command line. test_faults pins this.
    return any("multiprocessing." in part for part in process.cmdline())


def orchestrator() -> psutil.Process | None:
    """The process that orchestrates this step's run, or None when the step runs inside it
    (in-process execution)."""
    process = psutil.Process()
    if not _is_multiprocessing_child(process):
        return None
    parent = process.parent()
    # Forked by the executor's forkserver (whose command line its children share): the
    # orchestrator is the server's parent. Only that one server is passed over: the run's
    # own process may be a forkserver's child too (a command running ranges at once).
    if (
        parent is not None
        and "multiprocessing.forkserver" in " ".join(parent.cmdline())
        and parent.cmdline() == process.cmdline()
    ):
        parent = parent.parent()
    return parent


def _alive(process: psutil.Process) -> bool:
    # is_running compares pid and start time (a recycled pid is not it); a killed process
    # its parent has not reaped yet is a zombie, gone all the same.
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def exit_with_orchestrator(poll_seconds: float = 1.0) -> psutil.Process | None:
    """In a step process: die (taking the workers with it) once the orchestrator is gone.
    Returns the orchestrator watched, if any."""
    global _watching
    watched = orchestrator()
    if watched is None or _watching:
        return watched

    def watch() -> None:
        while _alive(watched):
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="orchestrator-lifeline", daemon=True).start()
    _watching = True
    return watched
