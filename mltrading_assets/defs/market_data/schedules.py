"""Bars every market hour, mirroring the cron of the system we replace."""

from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.lib.schedules import active_symbols_schedule

market_data_schedule = active_symbols_schedule(
    name="market_data_schedule",
    job=market_data_job,
    cron_schedule="0 9-16 * * 1-5",
    description="Hourly bars for every active symbol during NYSE hours.",
    run_key_prefix="market_data",
)
