"""Checks half past every market hour, when that hour's bars and features are in (the
session's last hour included: its bars arrive at the close)."""

from mltrading_assets.defs.quality.jobs import quality_checks_job
from mltrading_assets.lib.schedules import active_symbols_schedule, check_tick_requests

quality_checks_schedule = active_symbols_schedule(
    name="quality_checks_schedule",
    job=quality_checks_job,
    cron_schedule="30 9-16 * * 1-5",
    description="Data-quality checks of every active symbol, half past each market hour.",
    run_key_prefix="checks",
    requests=check_tick_requests,
)
