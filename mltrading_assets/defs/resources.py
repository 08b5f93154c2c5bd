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
from mltrading_assets.sources import SOURCE_CLASSES, BarSource, build_source
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
        default=5,
        description=(
            "requests in flight at once (Yahoo's rate limit): the yahoo source fetches with "
            "this many worker processes whatever the core count; one bar step runs at a time "
            "across all runs (pool market_data_source)"
        ),
    )
    overlap_days: int = Field(
        default=3, description="days re-read before the newest stored bar on each refresh"
    )
    request_timeout_seconds: float = Field(
        default=10.0,
        description="yahoo: longest wait for any one HTTP request (yfinance's timeout)",
    )
    retry_attempts: int = Field(
        default=4,
        description="yahoo: attempts per symbol on 429, 5xx, timeouts and connection errors",
    )
    retry_backoff_seconds: float = Field(
        default=1.0,
        description="yahoo: first wait between attempts; doubles each time, with jitter",
    )
    yfinance_cache_dir: str = Field(
        default="",
        description="yahoo: folder of yfinance's time-zone and cookie cache (empty: its own)",
    )

    def source_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "csv_dir": self.csv_dir,
            "as_of": self.as_of,
            "request_timeout_s": self.request_timeout_seconds,
            "retry_attempts": self.retry_attempts,
            "retry_backoff_s": self.retry_backoff_seconds,
            "cache_dir": self.yfinance_cache_dir,
        }

    def build(self) -> BarSource:
        return build_source(**self.source_config())

    @property
    def is_network_bound(self) -> bool:
        return SOURCE_CLASSES[self.kind].network_bound

    def preload(self) -> None:
        """Import the source's client in this (step) process before workers fork from it."""
        SOURCE_CLASSES[self.kind].preload()

    def fetch_workers(self, cpu_workers: int) -> int:
        """Worker processes for the bar step. Fetching from the network waits on the source,
        not on a core: a network source gets a worker per request slot plus one per core,
        so every slot stays busy while some workers parse and write (the slots, a shared
        semaphore, keep requests in flight at ``max_concurrent_requests``). A local source
        needs no more workers than cores."""
        if self.is_network_bound:
            return self.max_concurrent_requests + cpu_workers
        return min(cpu_workers, self.max_concurrent_requests)


class ProcessingResource(dg.ConfigurableResource):
    """How a run processes its symbols: isolated worker processes with bounded resources."""

    workers: int = Field(
        default=0,
        description="worker processes per run, each with one DB connection; 0 = one per core",
    )
    symbol_timeout_seconds: float = Field(
        default=300.0,
        description="per-symbol budget: a symbol still running after this fails alone "
        "(its worker is stopped and replaced)",
    )
    database_outage_seconds: float = Field(
        default=60.0,
        description="a symbol whose database connection is lost is retried for this long "
        "(a server restart costs retries, not failed symbols); past it the run stops",
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
        description="tests only: SYMBOL=raise|hang|kill|slow,... (* = every symbol) makes "
        "those symbols fail or slow down on purpose",
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
                max_concurrent_requests=env_or("MLTRADING_MAX_CONCURRENT_REQUESTS", 5),
                request_timeout_seconds=env_or("MLTRADING_REQUEST_TIMEOUT_SECONDS", 10.0),
                yfinance_cache_dir=env_or("MLTRADING_YFINANCE_CACHE_DIR", ""),
            ),
            "processing": ProcessingResource(
                workers=env_or("MLTRADING_WORKERS", 0),
                symbol_timeout_seconds=env_or("MLTRADING_SYMBOL_TIMEOUT_SECONDS", 300.0),
                database_outage_seconds=env_or("MLTRADING_DATABASE_OUTAGE_SECONDS", 60.0),
                feature_set=env_or("MLTRADING_FEATURE_SET", "core"),
                fault_injection=env_or("MLTRADING_FAULT_INJECTION", ""),
            ),
        }
    )
