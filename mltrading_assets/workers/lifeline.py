"""No process of ours outlives the one that started it.

A run's processes: the orchestrator (``mltrading materialize``, or Dagster's run worker)
starts step processes through a forkserver (the multiprocess executor's, or the one the run
itself was forked from), and each step its symbol workers. Killed (``kill -9``, OOM), the
orchestrator takes nothing with it: the step process keeps a handle that keeps the
forkserver alive, and it blocks on events nobody reads, so its steps lingered for good,
holding connections. Here each watches the process above it:

- a step process watches the orchestrator (a thread, once a second) and kills itself when it
  is gone;
- a symbol worker asks the kernel for SIGKILL when its step process exits (Linux
  ``PR_SET_PDEATHSIG``), so its open transaction is rolled back with its connection.
"""

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# What ``ps -o comm``, ``top`` and psutil's ``name()`` call a step process: its command line
# is its forkserver's, the same as its run's when both come from one server.
STEP_PROCESS_NAME = "mltrading-step"
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
    # The process that asked for this one: the run's, whoever forked it (the executor's
    # forkserver, or the one the run itself was forked from, which its steps share).
    creator = multiprocessing.parent_process()
    if creator is not None and creator.pid is not None:
        try:
            return psutil.Process(creator.pid)
        except psutil.NoSuchProcess:
            # The run is gone already, and so goes its step, as the watch would decide.
            os.kill(os.getpid(), signal.SIGKILL)
    return process.parent()


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
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, STEP_PROCESS_NAME.encode())

    def watch() -> None:
        while _alive(watched):
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="orchestrator-lifeline", daemon=True).start()
    _watching = True
    return watched
