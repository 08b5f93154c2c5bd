"""Operations: data-quality checks per symbol, the system_logs table, retention, charts."""

import datetime as dt
import io
import re
import time
import urllib.error
import urllib.request

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster_shared.serdes import serialize_value
from PIL import Image

from mltrading_assets.db import tables
from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.defs.operations.jobs import expired_runs
from mltrading_assets.defs.operations.sensors import log_failed_runs, log_successful_runs
from mltrading_assets.lib.launching import materialize
from mltrading_assets.lib.partitions import register_partitions
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.names import CHECKS_RECORD_FAILURES, RunTags
from mltrading_assets_tests.test_dagster_runs import materializations, run_config

MONDAY_NOON = "2026-11-23T17:00:00Z"  # 12:00 New York, market open
MARKET_DATA_CHECKS = (
    "ohlc_sane",
    "no_duplicate_bars",
    "no_session_gaps",
    "no_missing_bars",
    "bars_on_grid",
    "fresh_during_market_hours",
)


def config_at(as_of: str, **processing) -> dict:
    config = run_config(**processing)
    config["resources"]["source"]["config"]["as_of"] = as_of
    return config


def evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    result = {}
    for event in instance.all_logs(run_id):
        dagster_event = event.dagster_event
        if dagster_event and dagster_event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = dagster_event.event_specific_data
            if data.partition:
                result[(data.check_name, data.partition)] = data.passed
    return result


@pytest.fixture
def loaded(instance, db):
    symbols = ["GOOD", "BAD"]
    register_partitions(instance, symbols)
    materialize(instance, "market_data", symbols, run_config=config_at(MONDAY_NOON))
    materialize(instance, "features", symbols, run_config=config_at(MONDAY_NOON))
    return symbols


def test_checks_pass_on_good_data(instance, loaded):
    [run] = materialize(instance, "checks", loaded, run_config=config_at(MONDAY_NOON))
    assert run.success
    results = evaluations(instance, run.run_id)
    assert len(results) == 16  # eight checks x two symbols
    assert all(results.values()), results


def test_each_check_fails_on_a_crafted_bad_partition(instance, db, loaded):
    with db.begin() as conn:
        run = lambda sql: conn.execute(sa.text(sql))  # noqa: E731
        # open above high on one bar
        run(
            "UPDATE market_data SET open = high * 2 WHERE symbol = 'BAD' AND timestamp = "
            "(SELECT min(timestamp) FROM market_data WHERE symbol = 'BAD')"
        )
        # a whole session missing inside the history
        run(
            "DELETE FROM market_data WHERE symbol = 'BAD' AND timestamp >= '2026-06-01' "
            "AND timestamp < '2026-06-02'"
        )
        # nothing since Friday while the market is open on Monday
        run("DELETE FROM market_data WHERE symbol = 'BAD' AND timestamp >= '2026-11-23'")
        # the same bar twice, a minute apart (the second is off the hourly grid)
        run(
            "INSERT INTO market_data (symbol, timestamp, source, open, high, low, close, volume) "
            "SELECT symbol, timestamp + interval '1 minute', source, open, high, low, close, "
            "volume FROM market_data WHERE symbol = 'BAD' ORDER BY timestamp DESC LIMIT 1"
        )
        # a feature out of its range
        run(
            "UPDATE feature_engineered_data SET williams_r = 5 WHERE symbol = 'BAD' AND "
            "williams_r IS NOT NULL AND timestamp = (SELECT max(timestamp) FROM "
            "feature_engineered_data WHERE symbol = 'BAD' AND williams_r IS NOT NULL)"
        )
    # An audit of the whole history finds every problem...
    audit = config_at(MONDAY_NOON, check_window_days=0)
    [check_run] = materialize(instance, "checks", loaded, run_config=audit)
    results = evaluations(instance, check_run.run_id)
    for check in (*MARKET_DATA_CHECKS, "feature_ranges", "rows_match_bars"):
        assert results[(check, "GOOD")] is True, check
        assert results[(check, "BAD")] is False, check
    # ...the hourly checks those of their window (the bad bar and the lost session are
    # older). 32 days: the window opens on a Thursday afternoon, inside a session.
    window = config_at(MONDAY_NOON, check_window_days=32)
    [check_run] = materialize(instance, "checks", loaded, run_config=window)
    results = evaluations(instance, check_run.run_id)
    assert results[("fresh_during_market_hours", "BAD")] is False
    assert results[("ohlc_sane", "BAD")] is True
    assert results[("no_session_gaps", "BAD")] is True
    # The window's grid checks see only the window's sessions: its first day's bars are
    # still on the grid, the bar a minute off still is not.
    assert results[("bars_on_grid", "GOOD")] is True
    assert results[("no_missing_bars", "GOOD")] is True
    assert results[("bars_on_grid", "BAD")] is False


def test_an_hourly_check_run_records_the_failures_and_keeps_each_symbols_last_status(
    instance, db, loaded
):
    [verdict] = materialize(instance, "checks", loaded, run_config=config_at(MONDAY_NOON))
    with db.begin() as conn:  # BAD goes stale: nothing since Friday
        conn.execute(
            sa.text("DELETE FROM market_data WHERE symbol = 'BAD' AND timestamp >= '2026-11-23'")
        )
    hourly = {RunTags.CHECKS_RECORD: CHECKS_RECORD_FAILURES}
    [run] = materialize(instance, "checks", loaded, tags=hourly, run_config=config_at(MONDAY_NOON))
    assert run.success
    assert evaluations(instance, run.run_id) == {("fresh_during_market_hours", "BAD"): False}
    summary = next(
        e.dagster_event.event_specific_data
        for e in instance.all_logs(run.run_id)
        if e.dagster_event
        and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.dagster_event.event_specific_data.check_name == "fresh_during_market_hours"
        and not e.dagster_event.event_specific_data.partition
    )
    assert summary.metadata["symbols_checked"].value == 2
    assert summary.metadata["failed_symbols"].value == "BAD"
    # Each other partition's latest execution, the one the UI shows, is still its last
    # evaluation (the run before), not "Skipped" for one this run planned and did not record.
    latest = {}
    latest_names = ("fresh_during_market_hours", "ohlc_sane")
    for name in latest_names:
        key = dg.AssetCheckKey(market_data.key, name)
        for record in instance.event_log_storage.get_asset_check_execution_history(key, 10):
            latest.setdefault((name, record.partition), (record.run_id, record.status.value))
    assert latest == {
        ("fresh_during_market_hours", "BAD"): (run.run_id, "FAILED"),
        ("fresh_during_market_hours", "GOOD"): (verdict.run_id, "SUCCEEDED"),
        ("fresh_during_market_hours", None): (run.run_id, "FAILED"),
        ("ohlc_sane", "BAD"): (verdict.run_id, "SUCCEEDED"),
        ("ohlc_sane", "GOOD"): (verdict.run_id, "SUCCEEDED"),
        ("ohlc_sane", None): (run.run_id, "SUCCEEDED"),
    }
    # And the status of each symbol's check is its latest evaluation's: each targets the
    # symbol's newest materialization (a status without one would be blank).
    keys = [dg.AssetCheckKey(market_data.key, name) for name in latest_names]
    with partition_loading_context(dynamic_partitions_store=instance):
        states = instance.event_log_storage.get_asset_check_state(
            [(key, market_data.partitions_def) for key in keys]
        )
    assert {
        (key.name, status.value): sorted(subset.subset_value.get_partition_keys())
        for key, state in states.items()
        for status, subset in state.subsets.items()
        if not subset.is_empty
    } == {
        ("fresh_during_market_hours", "FAILED"): ["BAD"],
        ("fresh_during_market_hours", "SUCCEEDED"): ["GOOD"],
        ("ohlc_sane", "SUCCEEDED"): ["BAD", "GOOD"],
    }


def test_freshness_is_a_warning_and_passes_while_the_market_is_closed(instance, loaded):
    saturday = "2026-11-28T17:00:00Z"
    [run] = materialize(instance, "checks", loaded, run_config=config_at(saturday))
    assert evaluations(instance, run.run_id)[("fresh_during_market_hours", "BAD")] is True
    severities = [
        e.dagster_event.event_specific_data.severity
        for e in instance.all_logs(run.run_id)
        if e.dagster_event
        and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.dagster_event.event_specific_data.check_name == "fresh_during_market_hours"
    ]
    assert set(severities) == {dg.AssetCheckSeverity.WARN}


def _finished_event(instance, run_id: str, event_type: str) -> dg.DagsterEvent:
    return next(
        e.dagster_event
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == event_type
    )


def test_system_logs_get_one_row_per_success_and_failure(instance, db, database_url, inject_faults):
    register_partitions(instance, ["AAPL", "FAIL"])
    [ok] = materialize(instance, "market_data", ["AAPL"], run_config=run_config())
    inject_faults("FAIL=raise")
    [bad] = materialize(instance, "market_data", ["FAIL"], run_config=run_config())
    resources = {"database": PostgresResource(url=database_url)}
    success = dg.build_run_status_sensor_context(
        sensor_name=log_successful_runs.name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(ok.run_id),
        dagster_event=_finished_event(instance, ok.run_id, "PIPELINE_SUCCESS"),
        resources=resources,
    )
    log_successful_runs(success)
    log_successful_runs(success)  # a re-delivered event adds nothing
    failure = dg.build_run_status_sensor_context(
        sensor_name=log_failed_runs.name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(bad.run_id),
        dagster_event=_finished_event(instance, bad.run_id, "PIPELINE_FAILURE"),
        resources=resources,
    ).for_run_failure()
    log_failed_runs(failure)
    with db.connect() as conn:
        rows = {
            r.run_id: r
            for r in conn.execute(sa.text("SELECT * FROM system_logs ORDER BY id")).all()
        }
    assert set(rows) == {ok.run_id, bad.run_id}
    assert rows[ok.run_id].status == "SUCCESS" and rows[ok.run_id].partitions == "AAPL..AAPL"
    assert rows[ok.run_id].job_name == "market_data_job" and rows[ok.run_id].duration_s > 0
    assert rows[bad.run_id].status == "FAILURE"
    assert "injected failure for FAIL" in rows[bad.run_id].error


def test_retention_keeps_the_latest_materialization_of_every_partition(instance, db, inject_faults):
    register_partitions(instance, ["A", "B"])
    [first] = materialize(instance, "market_data", ["A", "B"], run_config=run_config())
    [second] = materialize(instance, "market_data", ["A"], run_config=run_config())
    inject_faults("A=raise")
    [failed] = materialize(instance, "market_data", ["A"], run_config=run_config())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=45)
    expired = expired_runs(instance, max_age_days=30, now=later)
    # `first` still holds B's latest materialization, `second` holds A's.
    assert expired == [failed.run_id]
    assert expired_runs(instance, max_age_days=60, now=later) == []

    with dg.execute_job(
        dg.reconstructable(_retention_job),
        instance=instance,
        run_config={"ops": {"delete_expired_runs": {"config": {"max_age_days": 0}}}},
    ) as result:
        assert result.success
    assert instance.get_run_by_id(failed.run_id) is None
    assert instance.get_run_by_id(first.run_id) is not None
    latest = materializations(instance, market_data)
    assert set(latest) == {"A", "B"}


def _retention_job() -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return defs.resolve_job_def("retention_job")


def test_a_feature_partition_links_to_its_chart_drawn_when_opened(instance, db, database_url):
    from mltrading_assets.cli.chart_server import charts_served

    register_partitions(instance, ["AAPL"])
    materialize(instance, "market_data", ["AAPL"], run_config=run_config())
    with charts_served(database_url, "127.0.0.1", 0) as charts:
        [run] = materialize(
            instance, "features", ["AAPL"], run_config=run_config(charts_url=charts.url)
        )
        meta = materializations(instance, feature_engineered_data)["AAPL"].metadata
        assert "| williams_r |" in meta["latest_values"].value
        link = re.fullmatch(r"!\[AAPL features\]\((.+)\)", meta["chart"].value)
        with urllib.request.urlopen(link.group(1), timeout=10) as answer:
            image = Image.open(io.BytesIO(answer.read()))
        assert image.format == "PNG" and image.width >= 700
        with pytest.raises(urllib.error.HTTPError) as unknown:
            urllib.request.urlopen(f"{charts.url}/NFLX.png?source=synthetic", timeout=10)
        assert unknown.value.code == 404
        assert b"NFLX: no feature rows" in unknown.value.read()
    # The picture is not in the event log: the event stays small.
    [event] = [
        e
        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if e.dagster_event.partition == "AAPL"
    ]
    assert len(serialize_value(event)) < 4000  # with the picture: ~15,000


# The UI launches materializations and "Execute all" in Dagster's implicit asset job, which
# includes the checks of the selected assets and knows no partitions for a checks-only
# selection; these two jobs do the same.
UI_JOBS = {
    "materialize_market_data": dg.define_asset_job(
        "materialize_market_data", selection=dg.AssetSelection.assets(market_data)
    ),
    "execute_all_checks": dg.define_asset_job(
        "execute_all_checks",
        selection=dg.AssetSelection.checks_for_assets(market_data, feature_engineered_data),
    ),
}


def ui_job(name: str) -> dg.JobDefinition:
    from mltrading_assets.definitions import defs

    return dg.Definitions.merge(defs, dg.Definitions(jobs=[UI_JOBS[name]])).resolve_job_def(name)


def materialize_market_data_job() -> dg.JobDefinition:
    return ui_job("materialize_market_data")


def execute_all_checks_job() -> dg.JobDefinition:
    return ui_job("execute_all_checks")


def run_job(instance, job_fn, tags: dict) -> dg.DagsterRun:
    with dg.execute_job(
        dg.reconstructable(job_fn),
        instance=instance,
        run_config=config_at(MONDAY_NOON),
        tags=tags,
    ) as result:
        return result.dagster_run


def test_a_ui_materialization_runs_the_assets_checks_for_its_symbol(instance, db, loaded):
    run = run_job(instance, materialize_market_data_job, {"dagster/partition": "GOOD"})
    assert run.status == dg.DagsterRunStatus.SUCCESS
    results = evaluations(instance, run.run_id)
    # Every market_data check ran (none SKIPPED) for GOOD alone...
    assert results == {(check, "GOOD"): True for check in MARKET_DATA_CHECKS}
    # ...and recorded GOOD's own numbers, not a summary of the run.
    [record] = [
        e.dagster_event.event_specific_data
        for e in instance.all_logs(run.run_id)
        if e.dagster_event
        and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.dagster_event.event_specific_data.check_name == "no_duplicate_bars"
    ]
    assert set(record.metadata) == {"duplicate_bars"}


def test_checks_of_every_symbol_from_a_run_without_partitions(instance, db, loaded):
    """The asset page's "Execute all" launches the checks without a partition: every active
    symbol is checked, each with its own result, and the run succeeds."""
    from mltrading_assets.db.symbols import add_symbols

    with db.begin() as conn:
        add_symbols(conn, loaded)
    run = run_job(instance, execute_all_checks_job, {})
    assert run.status == dg.DagsterRunStatus.SUCCESS
    results = evaluations(instance, run.run_id)
    assert len(results) == 16 and all(results.values()), results


def test_an_invalid_partition_costs_one_failed_run_and_leaves_no_planned_check(instance, db):
    """A key added with the UI's "Add a partition" that is no symbol: its run fails saying
    what was meant, withdraws the checks it planned (else they stay "Execution failed" as
    every check's latest execution once the partition is gone), and nothing follows it."""
    from mltrading_assets.defs.features.jobs import features_requests_after

    register_partitions(instance, ["nflx"])
    run = run_job(instance, materialize_market_data_job, {"dagster/partition": "nflx"})
    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = [
        e.dagster_event.event_specific_data.error.message
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    assert "invalid symbol 'nflx'" in failure and "did you mean NFLX?" in failure
    storage = instance.event_log_storage
    for check in MARKET_DATA_CHECKS:
        key = dg.AssetCheckKey(market_data.key, check)
        assert storage.get_asset_check_execution_history(key, limit=10) == []
    # What features_after_failed_market_data would request for it (predictions alike).
    assert features_requests_after(instance, run) == []


def test_a_failed_ui_materialization_leaves_no_check_execution_planned(
    instance, db, loaded, inject_faults
):
    # Its checks do not run when the asset step fails: planned executions left behind showed
    # as every check's latest execution, "Execution failed", while the list said Succeeded.
    inject_faults("GOOD=raise")
    run = run_job(instance, materialize_market_data_job, {"dagster/partition": "GOOD"})
    assert run.status == dg.DagsterRunStatus.FAILURE
    for check in MARKET_DATA_CHECKS:
        key = dg.AssetCheckKey(market_data.key, check)
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        assert run.run_id not in {record.run_id for record in history}


def _history_rows_read(db: sa.Engine) -> int:
    """Rows of the bar, feature and gap tables read so far, by scans and index lookups.

    Each backend reports its counts when its connection closes; the tick's processes have
    exited, so the totals settle within moments."""
    statement = (
        "SELECT (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables "
        "        WHERE relname = ANY(:tables)) "
        "     + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes "
        "        WHERE relname = ANY(:tables))"
    )
    tables = ["market_data", "feature_engineered_data", "known_gaps"]
    previous = None
    for _ in range(20):
        with db.connect() as conn:
            total = conn.execute(sa.text(statement), {"tables": tables}).scalar_one()
        if total == previous:
            return total
        previous = total
        time.sleep(1)
    return previous


def test_an_hourly_tick_reads_a_bounded_window_of_a_long_history(instance, db):
    """A tick (new bars, their features, every check) reads as much of a symbol with two
    years of bars as of one with one year: no query grows with the history."""
    one_hour_later = (pd.Timestamp(MONDAY_NOON) + pd.Timedelta(hours=1)).isoformat()
    register_partitions(instance, ["LONG"])
    read = {}
    for years in (1, 2):
        with db.begin() as conn:
            conn.exec_driver_sql(
                "TRUNCATE market_data, feature_engineered_data, known_gaps CASCADE"
            )
        load = config_at(MONDAY_NOON)
        load["resources"]["source"]["config"]["history_days"] = 365 * years
        materialize(instance, "market_data", ["LONG"], run_config=load)
        materialize(instance, "features", ["LONG"], run_config=load)
        with db.begin() as conn:
            # Other symbols, as in any real universe (alone, LONG is the whole table and a
            # scan of it is the planner's right choice), and the statistics autovacuum
            # would gather after a load.
            for table in (tables.market_data, tables.feature_engineered_data):
                columns = [c.name for c in table.columns if c.name != "symbol"]
                names = ", ".join(f'"{c}"' for c in columns)
                conn.exec_driver_sql(
                    f"INSERT INTO public.{table.name} (symbol, {names}) "
                    f"SELECT 'OTHER' || n, {names} FROM public.{table.name}, "
                    "generate_series(1, 40) AS n WHERE symbol = 'LONG'"
                )
            conn.exec_driver_sql("ANALYZE market_data, feature_engineered_data, known_gaps")
        before = _history_rows_read(db)
        tick = config_at(one_hour_later)
        for asset in ("market_data", "features", "checks"):
            [run] = materialize(instance, asset, ["LONG"], run_config=tick)
            assert run.success
        read[years] = _history_rows_read(db) - before
    bars_per_year = 365 * 5 * 7 // 7  # ~1,750 hourly bars
    # A query over the whole history would read ~1,750 rows more with the second year.
    assert read[2] - read[1] < bars_per_year / 4, read
