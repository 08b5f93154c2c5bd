"""The shared resources, bound to the environment: each setting is an ``EnvVar`` when its
variable is set (shown as such in Deployment → Resources), else its default."""

import dagster as dg

from mltrading_assets.lib import distributed
from mltrading_assets.lib.resources import (
    DEFAULT_CHARTS_URL,
    BarSourceResource,
    PostgresResource,
    ProcessingResource,
    env_or,
)


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
                # Worker hosts: Yahoo's limit holds per host (one client address each).
                request_slots_scope=env_or(
                    "MLTRADING_REQUEST_SLOTS", "host" if distributed.enabled() else "step"
                ),
                request_timeout_seconds=env_or("MLTRADING_REQUEST_TIMEOUT_SECONDS", 10.0),
                yfinance_cache_dir=env_or("MLTRADING_YFINANCE_CACHE_DIR", ""),
            ),
            "processing": ProcessingResource(
                workers=env_or("MLTRADING_WORKERS", 0),
                symbol_timeout_seconds=env_or("MLTRADING_SYMBOL_TIMEOUT_SECONDS", 300.0),
                database_outage_seconds=env_or("MLTRADING_DATABASE_OUTAGE_SECONDS", 60.0),
                feature_set=env_or("MLTRADING_FEATURE_SET", "core"),
                charts_url=env_or("MLTRADING_CHARTS_URL", DEFAULT_CHARTS_URL),
            ),
        }
    )
