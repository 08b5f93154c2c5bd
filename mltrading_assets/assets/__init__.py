"""Software-defined assets, partitioned by symbol."""

from mltrading_assets.assets.feature_engineered_data import feature_engineered_data
from mltrading_assets.assets.market_data import market_data

__all__ = ["feature_engineered_data", "market_data"]
