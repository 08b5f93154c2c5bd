"""Where the project keeps its local state."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_home() -> Path:
    """Local state (embedded database, Dagster home, models): ``MLTRADING_HOME`` or
    ``.mltrading`` in the checkout."""
    return Path(os.environ.get("MLTRADING_HOME", PROJECT_ROOT / ".mltrading")).resolve()
