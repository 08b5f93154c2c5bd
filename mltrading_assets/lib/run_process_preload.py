"""What the forkserver of a command's run processes loads before it forks any
(``run_processes``): the definitions, once for every run. Named, not imported: this layer
sits below them.

A forkserver whose preload raises dies, and every run asked of it fails with a bare
"unexpected EOF"; so a failure is passed over here, and each run, loading the definitions
again, reports it as it would have anyway.
"""

import contextlib
import importlib

from mltrading_assets.lib.run_processes import DEFINITIONS_MODULE

with contextlib.suppress(Exception):
    importlib.import_module(DEFINITIONS_MODULE)
