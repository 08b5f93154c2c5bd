"""Resources every domain shares: the database, the bar source, and how symbols are processed.

Each setting is an ``EnvVar`` when its variable is set (shown as such in Deployment →
Resources), else a default; any of them can be overridden per run in the launchpad.
"""

import os
from contextlib import AbstractContextManager
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from mltrading_assets.db.engine import create_app_engine, one_connection
from mltrading_assets.sources import BarSource, build_source
from mltrading_assets.workers.isolation import default_workers


class PostgresResource(dg.ConfigurableResource):
    """The application database (tables in schema ``public``)."""

    url: str = Field(
        description="SQLAlchemy URL of the PostgreSQL database (MLTRADING_DATABASE_URL)"
    )

    def engine(self, pool_size: int = 2) -> sa.Engine:
        return create_app_engine(self.url, pool_size=pool_size)

    def connection(self, begin: bool = False) -> AbstractContextManager[sa.Connection]:
        """One connection, closed with its engine (``begin``: inside a transaction)."""
        return one_connection(self.url, begin=begin)


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


class ProcessingResource(dg.ConfigurableResource):
    """How a run processes its symbols: isolated worker processes with bounded resources."""

    workers: int = Field(
        default=0,
        description="worker processes per run, each with one DB connection; 0 = one per core",
    )
    symbol_timeout_seconds: float = Field(
        default=300.0, description="a symbol still running after this fails alone"
    )
    max_symbols_per_worker: int = Field(
        default=200, description="a worker is replaced after this many symbols (bounds memory)"
    )
    start_method: str = Field(
        default="fork",
        description="how workers start: fork (fast) or forkserver (fresh interpreter)",
    )
    charts: bool = Field(
        default=True,
        description="attach a chart and the latest values to each feature materialization",
    )
    feature_set: str = Field(default="core", description="core | extended")
    fault_injection: str = Field(
        default="",
        description="tests only: SYMBOL=raise|hang|kill,... makes those symbols fail on purpose",
    )

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else default_workers()

    def faults(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.fault_injection.split(",") if "=" in item)
        return {symbol.strip(): fault.strip() for symbol, fault in pairs}


def env_or(name: str, default):
    """``EnvVar(name)`` when the variable is set (shown as such in the UI), else ``default``."""
    if name not in os.environ:
        return default
    if isinstance(default, bool):
        raise TypeError("boolean settings are not read from the environment")
    if isinstance(default, int):
        return dg.EnvVar.int(name)
    if isinstance(default, float):
        return float(os.environ[name])
    return dg.EnvVar(name)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "database": PostgresResource(url=dg.EnvVar("MLTRADING_DATABASE_URL")),
            "source": BarSourceResource(
                kind=env_or("MLTRADING_SOURCE", "synthetic"),
                csv_dir=env_or("MLTRADING_CSV_DIR", ""),
                as_of=env_or("MLTRADING_SYNTHETIC_AS_OF", ""),
            ),
            "processing": ProcessingResource(
                workers=env_or("MLTRADING_WORKERS", 0),
                feature_set=env_or("MLTRADING_FEATURE_SET", "core"),
                fault_injection=env_or("MLTRADING_FAULT_INJECTION", ""),
            ),
        }
    )
