"""The whole system: every domain under ``defs/`` (one folder each), plus the executor.

``defs/`` holds what Dagster sees; the engine it drives (features, sources, database access,
worker isolation, the trading calendar) lives in packages beside it that never import Dagster.
"""

from pathlib import Path

import dagster as dg

from mltrading_assets.lib import code_server, distributed, process_exit, run_processes

# Every process that loads the code (run workers above all, one per run) exits without the
# interpreter's last garbage collections: ~0.75 s of CPU each.
process_exit.skip_final_collections()

# Loaded by Dagster's code server: each run it launches is forked with this code in place.
code_server.fork_runs_from_loaded_code()

# Forkserver with preloaded modules: a step starts in ~0.4 s instead of ~1 s (spawn).
# Set here, not in run config: run config was seen ignored for partition-tagged runs.
EXECUTOR_CONFIG = {
    "max_concurrent": 2,
    "start_method": {
        "forkserver": {
            "preload_modules": [
                run_processes.PRELOAD_MODULE,
                "pandas",
                "talib",
                "dagster_postgres",
            ]
        }
    },
}
# With MLTRADING_CELERY_BROKER set, steps run on worker hosts instead (`mltrading worker`).
executor = (
    distributed.executor()
    if distributed.sends_steps()
    else dg.multiprocess_executor.configured(EXECUTOR_CONFIG)
)

# A plain Definitions object (not a @dg.definitions function), so the CLI and the tests can
# import `defs`, and runs launched from Python can name it (lib/launching.py).
defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    dg.Definitions(executor=executor),
)
