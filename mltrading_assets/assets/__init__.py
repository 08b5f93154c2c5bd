"""Software-defined assets, partitioned by symbol."""

import warnings

import dagster as dg

# backfill_policy is beta in Dagster 1.13; batching symbols into runs depends on it on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

from mltrading_assets.assets.feature_engineered_data import feature_engineered_data
from mltrading_assets.assets.market_data import market_data

__all__ = ["feature_engineered_data", "market_data"]
