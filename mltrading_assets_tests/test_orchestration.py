"""Schedules, sensors and batching: what runs when, for which symbols, exactly once."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from mltrading_assets.db.symbols import active_symbols, add_symbols, deactivate_symbols
from mltrading_assets.defs.features.schedules import features_requests, features_schedule
from mltrading_assets.defs.features.sensors import features_after_market_data
from mltrading_assets.defs.market_data.schedules import market_data_schedule
from mltrading_assets.defs.quality.schedules import quality_checks_schedule
from mltrading_assets.defs.symbols.sensors import symbol_universe_sensor
from mltrading_assets.lib.launching import materialize
from mltrading_assets.lib.partitions import register_partitions
from mltrading_assets.lib.ranged_runs import MAX_RANGES, contiguous_ranges
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.names import CHECKS_RECORD_FAILURES, RunTags
from mltrading_assets_tests.conftest import success_sensor_context
from mltrading_assets_tests.test_dagster_runs import run_config


def tick(local: str) -> dt.datetime:
    return pd.Timestamp(local, tz="America/New_York").to_pydatetime()


def evaluate_data_schedule(instance, database_url, when: dt.datetime):
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"database": PostgresResource(url=database_url)},
    )
    return market_data_schedule(context)


@pytest.fixture
def universe(instance, db):
    def add(symbols: list[str]) -> None:
        with db.begin() as conn:
            add_symbols(conn, symbols)
        register_partitions(instance, symbols)

    return add


def test_schedules_fire_at_market_hours_new_york_time_across_dst():
    assert market_data_schedule.cron_schedule == "0 9-16 * * 1-5"
    assert features_schedule.cron_schedule == "5 9-16 * * 1-5"
    assert market_data_schedule.execution_timezone == "America/New_York"
    from dagster._utils.schedules import cron_string_iterator

    start = pd.Timestamp("2026-03-06 00:00", tz="America/New_York").timestamp()
    ticks = cron_string_iterator(start, "0 9-16 * * 1-5", "America/New_York")
    first_two_days = [next(ticks) for _ in range(16)]
    utc_hours = sorted({t.astimezone(dt.UTC).hour for t in first_two_days[::8]})
    # 9:00 New York is 14:00 UTC on Friday (EST) and 13:00 UTC on Monday after DST starts.
    assert [t.strftime("%a %H:%M") for t in first_two_days[::8]] == ["Fri 09:00", "Mon 09:00"]
    assert utc_hours == [13, 14]


def test_a_tick_requests_every_active_symbol_in_a_few_ranged_runs(
    instance, universe, database_url, db
):
    symbols = [f"S{i:04d}" for i in range(1000)]
    universe(symbols)
    with db.begin() as conn:
        deactivate_symbols(conn, ["S0600"])
    requests = evaluate_data_schedule(instance, database_url, tick("2026-11-24 10:00"))
    assert len(requests) == 3  # 0-499, 500-599, 601-999: runs of up to 500, split at S0600
    covered = []
    for request in requests:
        first = request.tags["dagster/asset_partition_range_start"]
        last = request.tags["dagster/asset_partition_range_end"]
        covered += symbols[symbols.index(first) : symbols.index(last) + 1]
        assert request.tags[RunTags.TICK] == "2026-11-24T15:00:00+00:00"
    assert covered == [s for s in symbols if s != "S0600"]
    again = evaluate_data_schedule(instance, database_url, tick("2026-11-24 10:00"))
    assert [r.run_key for r in again] == [r.run_key for r in requests]
    later = evaluate_data_schedule(instance, database_url, tick("2026-11-24 11:00"))
    assert not {r.run_key for r in later} & {r.run_key for r in requests}


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("2026-11-26 10:00", "not an NYSE trading day"),  # Thanksgiving
        ("2026-11-27 14:00", "after the 13:00 NYSE close"),  # early close the day after
        ("2026-12-25 09:00", "not an NYSE trading day"),
    ],
)
def test_holidays_and_hours_after_an_early_close_are_skipped(
    instance, universe, database_url, when, reason
):
    universe(["AAPL"])
    result = evaluate_data_schedule(instance, database_url, tick(when))
    assert isinstance(result, dg.SkipReason)
    assert reason in result.skip_message


def test_the_early_close_hour_itself_still_runs(instance, universe, database_url):
    universe(["AAPL"])
    requests = evaluate_data_schedule(instance, database_url, tick("2026-11-27 13:00"))
    assert len(requests) == 1


def test_scheduled_checks_record_failures_the_run_after_the_close_included(
    instance, universe, database_url
):
    universe(["AAPL"])

    def checks_at(local: str):
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick(local),
            resources={"database": PostgresResource(url=database_url)},
        )
        return quality_checks_schedule(context)

    [hourly] = checks_at("2026-11-24 15:30")
    assert hourly.tags[RunTags.CHECKS_RECORD] == CHECKS_RECORD_FAILURES
    [after_close] = checks_at("2026-11-24 16:30")  # the session's last bars came at 16:00
    assert after_close.tags[RunTags.CHECKS_RECORD] == CHECKS_RECORD_FAILURES
    [early_close] = checks_at("2026-11-27 13:30")  # NYSE closed at 13:00 that day
    assert early_close.tags[RunTags.CHECKS_RECORD] == CHECKS_RECORD_FAILURES
    assert isinstance(checks_at("2026-11-27 14:30"), dg.SkipReason)


def test_features_wait_for_the_data_runs_of_their_hour(instance, universe):
    universe(["AAPL", "MSFT"])
    hour = pd.Timestamp("2026-11-24 15:00", tz="UTC")
    skipped = features_requests(instance, hour + pd.Timedelta(minutes=5))
    assert "no market_data runs" in skipped.skip_message

    running = instance.create_run_for_job(
        job_def=resolved("market_data_job"),
        tags={
            RunTags.TICK: hour.isoformat(),
            "dagster/asset_partition_range_start": "AAPL",
            "dagster/asset_partition_range_end": "MSFT",
        },
        status=dg.DagsterRunStatus.STARTED,
    )
    waiting = features_requests(instance, hour + pd.Timedelta(minutes=5))
    assert "still running" in waiting.skip_message

    # A finished run, even a partly failed one, wrote the bars of its good symbols.
    instance.report_run_failed(running)
    [request] = features_requests(instance, hour + pd.Timedelta(minutes=5))
    assert request.tags[RunTags.FEATURES_AFTER] == running.run_id
    assert request.tags["dagster/asset_partition_range_start"] == "AAPL"


def resolved(job_name: str) -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return defs.resolve_job_def(job_name)


def test_features_follow_a_finished_data_run_exactly_once(instance, universe):
    universe(["AAPL", "MSFT"])
    [data_run] = materialize(instance, "market_data", ["AAPL", "MSFT"], run_config=run_config())
    run = instance.get_run_by_id(data_run.run_id)
    context = success_sensor_context(instance, run, features_after_market_data)
    [request] = features_after_market_data(context)
    assert request.job_name == "features_job"
    assert request.tags["dagster/asset_partition_range_start"] == "AAPL"
    assert request.tags["dagster/asset_partition_range_end"] == "MSFT"
    # Once a features run for it exists (from this sensor or the :05 schedule), skip.
    materialize(
        instance,
        "features",
        ["AAPL", "MSFT"],
        run_config=run_config(),
        tags={RunTags.FEATURES_AFTER: run.run_id},
    )
    assert features_after_market_data(context) is None


def test_one_tick_follows_a_data_run_behind_runs_it_skips(instance, universe):
    universe(["AAPL", "MSFT"])
    cursor = features_after_market_data.evaluate_tick(dg.build_sensor_context(instance)).cursor
    [followed] = materialize(instance, "market_data", ["MSFT"], run_config=run_config())
    materialize(
        instance,
        "features",
        ["MSFT"],
        run_config=run_config(),
        tags={RunTags.FEATURES_AFTER: followed.run_id},
    )
    [data_run] = materialize(instance, "market_data", ["AAPL"], run_config=run_config())
    # The daemon's view: one tick of the sensor in the runs' own code location, over every
    # run finished since its cursor. Two to pass over first (one followed already, one no
    # data run): the features are requested in this tick, not two ticks later.
    origin = instance.get_run_by_id(data_run.run_id).remote_job_origin.repository_origin
    result = features_after_market_data.evaluate_tick(
        dg.SensorEvaluationContext(
            instance_ref=None,
            last_tick_completion_time=None,
            last_run_key=None,
            cursor=cursor,
            repository_name=origin.repository_name,
            code_location_origin=origin.code_location_origin,
            instance=instance,
        )
    )
    [request] = result.run_requests
    assert request.tags[RunTags.FEATURES_AFTER] == data_run.run_id
    assert request.tags["dagster/asset_partition_range_start"] == "AAPL"


def test_universe_sensor_adds_partitions_and_loads_history_of_new_symbols(
    instance, db, database_url
):
    with db.begin() as conn:
        add_symbols(conn, ["AAPL", "MSFT", "NVDA"])
    resources = {"database": PostgresResource(url=database_url)}
    result = symbol_universe_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["AAPL", "MSFT", "NVDA"]
    [request] = result.run_requests
    assert request.job_name == "market_data_job"
    assert (
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    ) == ("AAPL", "NVDA")

    instance.add_dynamic_partitions("symbols", list(add.partition_keys))
    quiet = symbol_universe_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor)
    )
    assert isinstance(quiet, dg.SkipReason)

    with db.begin() as conn:
        add_symbols(conn, ["AMD"])
    later = symbol_universe_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor)
    )
    assert list(later.dynamic_partitions_requests[0].partition_keys) == ["AMD"]
    assert later.run_requests[0].tags["dagster/asset_partition_range_start"] == "AMD"


def test_contiguous_ranges_split_on_gaps_and_size():
    keys = list("ABCDEFGH")
    assert contiguous_ranges(keys, set("ABCEFGH"), 3) == [("A", "C"), ("E", "G"), ("H", "H")]
    assert contiguous_ranges(keys, set(), 3) == []


def test_a_large_universe_goes_in_fewer_bigger_runs():
    keys = [f"S{i:05d}" for i in range(10_000)]
    # Up to SYMBOLS_PER_RUN x MAX_RANGES symbols, runs keep their size...
    small = contiguous_ranges(keys, keys[:1000])
    assert [(keys.index(a), keys.index(b)) for a, b in small] == [(0, 499), (500, 999)]
    # ...beyond it, the count of runs stops growing and each run covers more.
    large = contiguous_ranges(keys, keys)
    assert len(large) == MAX_RANGES
    assert {keys.index(b) - keys.index(a) + 1 for a, b in large} == {10_000 // MAX_RANGES}


def test_connections_stay_bounded_while_200_symbols_are_processed(instance, universe, db):
    import threading

    symbols = [f"C{i:03d}" for i in range(200)]
    universe(symbols)
    peak = 0
    stop = threading.Event()
    database = db.url.database

    def sample() -> None:
        nonlocal peak
        with db.connect() as conn:
            while not stop.is_set():
                count = conn.execute(
                    # Connections the run opened. Idle ones that other Dagster instances of
                    # this pytest process opened earlier are not the run's.
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                        "AND application_name <> 'mltrading-tests' AND backend_start >= :t"
                    ),
                    {"d": database, "t": started},
                ).scalar_one()
                conn.rollback()  # pg_stat_activity is a per-transaction snapshot
                peak = max(peak, count)
                stop.wait(0.05)

    with db.connect() as conn:
        started = conn.execute(sa.text("SELECT now()")).scalar_one()
    sampler = threading.Thread(target=sample)
    sampler.start()
    config = run_config()
    config["resources"]["source"]["config"]["history_days"] = 20
    try:
        [run] = materialize(instance, "market_data", symbols, run_config=config)
    finally:
        stop.set()
        sampler.join()
    assert run.success
    # At most the worker count + 3 connections: the workers, and the step's Dagster storages
    # (its event log and its run storage each keep one; the orchestrator reuses this
    # process's instance, whose kept connections may predate the run).
    assert peak <= 2 + 3, f"peak {peak} connections"


def test_universe_sensor_adopts_ui_partitions_and_removes_invalid_ones(instance, db, database_url):
    """The Materialize dialog's "Add a partition" bypasses stock_info: a valid name becomes
    an active symbol (scheduled like any other), a typo is removed with the reason."""
    instance.add_dynamic_partitions("symbols", ["ORCL", "ibm"])
    resources = {"database": PostgresResource(url=database_url)}
    result = symbol_universe_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    with db.connect() as conn:
        assert active_symbols(conn) == ["ORCL"]
    [removal] = result.dynamic_partitions_requests
    assert isinstance(removal, dg.DeleteDynamicPartitionsRequest)
    assert list(removal.partition_keys) == ["ibm"]
    # ORCL has no bars yet: its history is loaded, like a symbol added from the CLI.
    [load] = result.run_requests
    assert load.tags["dagster/asset_partition_range_start"] == "ORCL"


def test_universe_sensor_leaves_symbols_a_backfill_loads_to_it(instance, db, database_url):
    """`symbols add` and then a UI backfill of the new partitions: the backfill loads them,
    the sensor does not load them a second time."""
    from dagster._core.execution.backfill import PartitionBackfill

    from mltrading_assets.definitions import defs
    from mltrading_assets.defs.market_data.assets import market_data

    instance.add_dynamic_partitions("symbols", ["ORCL", "IBM"])
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="uibackfill",
        asset_graph=defs.resolve_asset_graph(),
        partition_names=["ORCL"],
        asset_selection=[market_data.key],
        backfill_timestamp=pd.Timestamp.now().timestamp(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    with db.begin() as conn:
        add_symbols(conn, ["ORCL", "IBM"])
    resources = {"database": PostgresResource(url=database_url)}
    result = symbol_universe_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    )
    [load] = result.run_requests
    assert (
        load.tags["dagster/asset_partition_range_start"],
        load.tags["dagster/asset_partition_range_end"],
    ) == ("IBM", "IBM")


def test_a_promotion_by_a_run_that_also_predicts_is_not_followed_by_a_second_prediction(
    instance,
):
    """A "Materialize all" of the models moves the champion and predicts in the same run (or
    backfill): predictions_after_promotion must not predict every symbol again after it."""
    from mltrading_assets.definitions import defs
    from mltrading_assets.defs.models.assets import champion_model, model_predictions
    from mltrading_assets.defs.models.sensors import promoter_predicts

    job = defs.resolve_implicit_global_asset_job_def()
    promote = {"ops": {"champion_model": {"config": {"promote": True}}}}
    both = instance.create_run_for_job(
        job_def=job, asset_selection={champion_model.key, model_predictions.key}, run_config=promote
    )
    alone = instance.create_run_for_job(
        job_def=job, asset_selection={champion_model.key}, run_config=promote
    )
    assert promoter_predicts(instance, both.run_id)
    assert not promoter_predicts(instance, alone.run_id)
    assert not promoter_predicts(instance, "")  # by hand: `mltrading models promote`
