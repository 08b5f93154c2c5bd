"""Whether schedules start running by themselves (the default) or wait to be turned on."""

import os

import dagster as dg


def default_schedule_status() -> dg.DefaultScheduleStatus:
    """RUNNING unless ``MLTRADING_SCHEDULES=off`` (a laptop that only wants the UI, the load
    benchmark that plays ticks on its own clock). Only the default: a schedule turned on or
    off in the UI stays so."""
    if os.environ.get("MLTRADING_SCHEDULES", "on").lower() == "off":
        return dg.DefaultScheduleStatus.STOPPED
    return dg.DefaultScheduleStatus.RUNNING
