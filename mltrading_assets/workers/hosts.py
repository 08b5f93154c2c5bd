"""Which host a process runs on, as the platform names it.

Run tags, materialization metadata, request-slot scopes and the dead-run reaper all name a
host. ``MLTRADING_HOST_NAME`` (set by ``mltrading worker --name``) wins over the machine's
name: hosts that share a kernel (containers, network namespaces) share its host name, pids
and all, and must still never judge each other's processes.
"""

import os
import socket

HOST_NAME_VARIABLE = "MLTRADING_HOST_NAME"


def host_name() -> str:
    return os.environ.get(HOST_NAME_VARIABLE) or socket.gethostname()
