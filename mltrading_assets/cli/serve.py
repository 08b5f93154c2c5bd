"""Run `dagster dev` so that SIGTERM stops it as Ctrl-C does, children included.

Started plainly, a SIGTERM ended `mltrading ui` at once and left `dagster dev`, its webserver,
daemon and code server running (a service manager would have had to SIGKILL them). Here the
server runs in its own process group; SIGTERM or SIGINT to us becomes SIGINT to that whole
group, as a terminal's Ctrl-C would be, and whatever is still there after the grace period is
killed.
"""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

GRACE_SECONDS = 12.0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _hear_interrupts() -> None:
    # A command started in the background by a non-interactive shell (a service script, CI)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
    # SIGINT we send on stop would be lost.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve(command: list[str], cwd: Path, grace_seconds: float = GRACE_SECONDS) -> int:
    """Run ``command`` until it exits or we are told to stop; returns its exit code."""
    env = {
        **os.environ,
        # `dagster dev` warns that it is superseded by `dg dev` (dagster-dg-cli, a tool we
        # do not ship); the warning tells a user of `mltrading ui` nothing.
        "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded",
    }
    child = subprocess.Popen(
        command, cwd=cwd, env=env, start_new_session=True, preexec_fn=_hear_interrupts
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return child.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(grace_seconds)
        # Children that outlived their parent's shutdown, or a parent that did not stop.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
