from typing import Any

import dagster as dg
from pydantic import Field

from mltrading_assets.sources import BarSource, build_source


class BarSourceResource(dg.ConfigurableResource):
    """Where bars come from: ``yahoo`` (yfinance), ``csv`` (a folder) or ``synthetic``."""

    kind: str = Field(default="synthetic", description="yahoo | csv | synthetic (MLTRADING_SOURCE)")
    csv_dir: str = Field(default="", description="folder of <SYMBOL>.csv files, for kind=csv")
    as_of: str = Field(
        default="", description="synthetic only: fixed clock (ISO time) for reproducible runs"
    )
    history_days: int = Field(default=365, description="history loaded for a new symbol")
    max_concurrent_requests: int = Field(
        default=5, description="fetches in flight at once per run (Yahoo's rate limit)"
    )
    overlap_days: int = Field(
        default=3, description="days re-read before the newest stored bar on each refresh"
    )

    def source_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "csv_dir": self.csv_dir, "as_of": self.as_of}

    def build(self) -> BarSource:
        return build_source(**self.source_config())
