"""How Dagster's code server starts a run: as a fork of a server that has already loaded the
definitions, not as a fresh interpreter.

Every run the daemon or the UI launches goes through the code server, which spawns a new
interpreter for it (Dagster 1.13.27: ``multiprocessing.get_context("spawn")`` in
``DagsterApiServer.__init__``, used by ``StartRun``). That interpreter spent ~1.2 s of CPU
importing Dagster, pandas and the definitions before the run could begin: two dozen times a
tick at 10,000 symbols, on the way of every run. Forked from a forkserver that has
loaded them once (``run_processes``, the same server a command's runs come from), a run
starts with the code in place, and forks its steps from the same server. A run is still a
process of its own, started the way ``spawn`` starts one (the run's arguments pickled to
it), and still reports its end through the same queue.

This replaces an attribute of a Dagster internal class; ``test_daemon`` pins it: its runs go
through a real code server, which must then have this forkserver as its child.
"""

import sys

from mltrading_assets.lib import run_processes

# Where Dagster's gRPC code server lives (1.13.27); only a process that runs one has it loaded.
SERVER_MODULE = "dagster._grpc.server"


def fork_runs_from_loaded_code() -> None:
    """Where a code server runs (its module is loaded), make it start runs from the
    preloaded forkserver; elsewhere change nothing and import nothing."""
    server_module = sys.modules.get(SERVER_MODULE)
    if server_module is None:
        return
    server = server_module.DagsterApiServer
    if not isinstance(vars(server).get("_mp_ctx"), property):
        # A data descriptor wins over the instance attribute the server sets in __init__, so
        # this holds for a server built before or after the definitions were imported. The
        # forkserver itself starts with the first run (the context is created lazily).
        server._mp_ctx = property(
            lambda _server: run_processes.context(), lambda _server, _value: None
        )
