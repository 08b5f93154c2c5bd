"""The bars job; features run in a separate (ranged) run once the bars they use are written."""

import dagster as dg

from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS

market_data_job = dg.define_asset_job(
    "market_data_job",
    # Checks run in their own job (quality_checks_job), not in every refresh.
    selection=dg.AssetSelection.assets(market_data).without_checks(),
    description="Fetch and store hourly bars for the selected symbols.",
    tags=MAX_RUNTIME_TAGS,
)
