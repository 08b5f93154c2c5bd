import dagster as dg

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.partitions import symbol_partitions
from mltrading_assets.lib.ranged_runs import MAX_RUNTIME_TAGS

quality_checks_job = dg.define_asset_job(
    "quality_checks_job",
    selection=dg.AssetSelection.checks_for_assets(market_data, feature_engineered_data),
    description="Data-quality checks of both assets for the selected symbols.",
    # A selection of checks alone leaves an asset job unpartitioned (Dagster 1.13 infers
    # partitions from assets only and ignores partitions_def), so the launchpad had no symbol
    # picker; a partitioned config gives the job its partitions.
    config=dg.PartitionedConfig(
        partitions_def=symbol_partitions, run_config_for_partition_key_fn=lambda _: {}
    ),
    tags=MAX_RUNTIME_TAGS,
    # Eight checks, each a few set-based queries over the run's symbols: in the run's own
    # process, not a subprocess each (~3 s to start one on 2 cores, more than the queries).
    executor_def=dg.in_process_executor,
)
