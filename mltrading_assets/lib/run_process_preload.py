"""What a forkserver of ours loads before it forks any process: the definitions and the
NYSE calendar with its hourly grid, once for every run (the forkserver of a command's runs
and of the code server's, ``run_processes``) and for every step (the multiprocess executor's).
The definitions are named, not imported: this layer sits below them.

A forkserver whose preload raises dies, and every run asked of it fails with a bare
"unexpected EOF"; so a failure is passed over here, and each run, loading the definitions
again, reports it as it would have anyway.
"""

import contextlib
import importlib

from mltrading_assets import trading_calendar
from mltrading_assets.lib.run_processes import DEFINITIONS_MODULE
from mltrading_assets.workers import forkservers

# A run forked from here forks its steps from here too (no forkserver of its own).
forkservers.share_with_children()

with contextlib.suppress(Exception):
    importlib.import_module(DEFINITIONS_MODULE)
    # Built by every bars and features step and every check run otherwise (~0.15 s of CPU).
    trading_calendar.warm()
