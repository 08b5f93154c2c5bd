"""The real thing: a Dagster instance on PostgreSQL (schema `dagster`), both assets run
through the multiprocess executor in symbol-ranged runs, rows checked in both tables."""

import os

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.defs.features.sensors import features_after_market_data
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.lib.launching import materialize
from mltrading_assets.lib.partitions import register_partitions, symbol_partitions
from mltrading_assets_tests.conftest import success_sensor_context, table_count

AS_OF = "2026-11-20T21:00:00Z"


def run_config(**processing) -> dict:
    return {
        "resources": {
            "source": {"config": {"kind": "synthetic", "as_of": AS_OF}},
            "processing": {"config": {"workers": 2, **processing}},
        }
    }


def materializations(instance: dg.DagsterInstance, asset: dg.AssetsDefinition) -> dict:
    """The latest materialization of each partition."""
    records = instance.fetch_materializations(asset.key, limit=1000, ascending=True).records
    return {r.asset_materialization.partition: r.asset_materialization for r in records}


def test_both_assets_materialize_per_symbol_through_the_multiprocess_executor(instance, db):
    symbols = ["AAPL", "MSFT", "GOOG"]
    register_partitions(instance, symbols)
    data_runs = materialize(instance, "market_data", symbols, run_config=run_config())
    feature_runs = materialize(instance, "features", symbols, run_config=run_config())
    assert [r.success for r in data_runs + feature_runs] == [True, True]  # one run per asset

    for symbol in symbols:
        bars = table_count(db, "market_data", symbol=symbol)
        assert bars > 1700
        assert table_count(db, "feature_engineered_data", symbol=symbol) == bars

    recorded = materializations(instance, market_data)
    assert set(recorded) == set(symbols)
    meta = recorded["MSFT"].metadata
    assert meta["rows_written"].value == table_count(db, "market_data", symbol="MSFT")
    assert meta["source"].value == "synthetic"
    assert "last_bar" in meta and "duration_s" in meta
    assert (
        materializations(instance, feature_engineered_data)["GOOG"]
        .metadata["feature_version"]
        .value
    )

    # Steps ran in subprocesses of the multiprocess executor.
    events = instance.all_logs(data_runs[0].run_id)
    assert any("multiprocess executor" in (e.message or "") for e in events)
    assert any(
        e.dagster_event and e.dagster_event.event_type_value == "STEP_WORKER_STARTED"
        for e in events
    )

    # Dagster's tables live in schema `dagster` only.
    with db.connect() as conn:
        schemas = dict(
            conn.execute(
                sa.text(
                    "SELECT table_name, table_schema FROM information_schema.tables "
                    "WHERE table_name IN ('runs', 'event_logs', 'market_data')"
                )
            ).all()
        )
    assert schemas == {"runs": "dagster", "event_logs": "dagster", "market_data": "public"}


def test_cli_runs_name_their_code_location(instance, db):
    """Runs started from Python carry the workspace's code location, as UI runs do: the
    Overview timeline shows only runs it can place there."""
    register_partitions(instance, ["AAPL"])
    [run] = materialize(instance, "market_data", ["AAPL"], run_config=run_config())
    origin = instance.get_run_by_id(run.run_id).remote_job_origin
    assert origin.repository_origin.get_label() == "__repository__@mltrading_assets"
    assert origin.job_name == "market_data_job"


def test_events_written_in_batches_keep_one_record_per_partition(instance, db):
    # Materializations go to the event log in batches (12 symbols: more than one progress
    # flush); each partition must still have its own, with its metadata. The run plans its
    # symbols in one event.
    symbols = [f"EV{i:02d}" for i in range(12)]
    register_partitions(instance, symbols)
    [run] = materialize(instance, "market_data", symbols, run_config=run_config())
    assert run.success

    def partitions_of(event_type: dg.DagsterEventType) -> list[str]:
        records = instance.get_records_for_run(run.run_id, of_type=event_type, limit=100)
        return sorted(r.event_log_entry.dagster_event.partition for r in records.records)

    [planned] = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    subset = planned.event_log_entry.dagster_event.event_specific_data.partitions_subset
    assert sorted(subset.get_partition_keys()) == symbols
    # One per partition (a job of one asset needs no result for the range).
    assert partitions_of(dg.DagsterEventType.ASSET_MATERIALIZATION) == symbols
    [record] = instance.get_asset_records([market_data.key])
    assert record.asset_entry.last_run_id == run.run_id
    recorded = materializations(instance, market_data)
    for symbol in symbols:
        rows = recorded[symbol].metadata["rows_written"].value
        assert rows == table_count(db, "market_data", symbol=symbol)
    status = instance.get_status_by_partition(market_data.key, symbols, symbol_partitions)
    assert {v.value for v in status.values()} == {"MATERIALIZED"}


def test_rerun_converges_without_rewriting_rows(instance, db):
    register_partitions(instance, ["AAPL", "MSFT"])
    materialize(instance, "market_data", ["AAPL", "MSFT"], run_config=run_config())
    rows = table_count(db, "market_data")
    again = materialize(instance, "market_data", ["AAPL", "MSFT"], run_config=run_config())
    assert again[0].success
    assert table_count(db, "market_data") == rows
    latest = materializations(instance, market_data)
    assert latest["AAPL"].metadata["rows_written"].value == 0

    # Features with nothing new to compute: the materialization the UI now shows still
    # carries the latest values and the chart link.
    materialize(instance, "features", ["AAPL", "MSFT"], run_config=run_config())
    [again] = materialize(instance, "features", ["AAPL", "MSFT"], run_config=run_config())
    assert again.success
    latest = materializations(instance, feature_engineered_data)["MSFT"].metadata
    assert latest["rows_written"].value == 0
    assert latest["chart"].value.startswith(
        "![MSFT features](http://127.0.0.1:3001/charts/MSFT.png?"
    )
    assert "| macd |" in latest["latest_values"].value


def both_assets_job() -> dg.JobDefinition:
    """Both assets in one job, as the UI's "Materialize all" selects them."""
    from mltrading_assets.definitions import defs

    job = dg.define_asset_job("materialize_all", selection=[market_data, feature_engineered_data])
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name)


def test_materialize_all_runs_features_in_the_same_run_and_keeps_each_symbols_metadata(
    instance, db
):
    # What the UI's "Materialize all" (or a backfill of both assets) launches: one ranged run
    # selecting both assets. The features step must run, not be skipped (a skipped one is
    # marked failed by the backfill), and no sensor run should follow it.
    symbols = ["ALLA", "ALLB", "ALLC"]
    register_partitions(instance, symbols)
    with dg.execute_job(
        dg.reconstructable(both_assets_job),
        instance=instance,
        asset_selection=[market_data.key, feature_engineered_data.key],
        tags={
            "dagster/asset_partition_range_start": "ALLA",
            "dagster/asset_partition_range_end": "ALLC",
        },
        run_config=run_config(),
    ) as result:
        assert result.success
        run = instance.get_run_by_id(result.run_id)
    skipped = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_SKIPPED
    ).records
    assert skipped == []
    bars = materializations(instance, market_data)
    features = materializations(instance, feature_engineered_data)
    for symbol in symbols:
        assert table_count(db, "feature_engineered_data", symbol=symbol) == table_count(
            db, "market_data", symbol=symbol
        )
        assert bars[symbol].metadata["rows_written"].value > 0
        assert "chart" in features[symbol].metadata
    status = instance.get_status_by_partition(
        feature_engineered_data.key, symbols, symbol_partitions
    )
    assert {v.value for v in status.values()} == {"MATERIALIZED"}

    context = success_sensor_context(instance, run, features_after_market_data)
    assert features_after_market_data(context) is None


def test_a_failing_symbol_fails_alone(instance, db, inject_faults):
    # B raises, C kills its worker process, D hangs past the per-symbol timeout.
    symbols = ["A", "B", "C", "D", "E"]
    register_partitions(instance, symbols)
    inject_faults("B=raise,C=kill,D=hang")
    config = run_config(symbol_timeout_seconds=5.0)
    [run] = materialize(instance, "market_data", symbols, run_config=config)
    assert not run.success

    assert table_count(db, "market_data", symbol="A") > 0
    assert table_count(db, "market_data", symbol="E") > 0
    for failed in ("B", "C", "D"):
        assert table_count(db, "market_data", symbol=failed) == 0
    status = instance.get_status_by_partition(market_data.key, symbols, symbol_partitions)
    assert {k: v.value for k, v in status.items()} == {
        "A": "MATERIALIZED",
        "B": "FAILED",
        "C": "FAILED",
        "D": "FAILED",
        "E": "MATERIALIZED",
    }
    # The run planned its symbols in one event (not one per symbol), and a failed symbol's
    # partition page still names the run: our storage reads the symbols from that event.
    planned = [
        e
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION_PLANNED"
    ]
    assert len(planned) == 1
    latest = instance.get_latest_planned_materialization_info(market_data.key, "C")
    assert latest is not None and latest.run_id == run.run_id
    failure = next(
        e
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    )
    text = str(failure.dagster_event.step_failure_data.error)
    assert "3 of 5 symbols failed" in text
    assert "injected failure for B" in text
    assert "worker process died" in text
    assert "timed out after 5 s" in text

    # Wiping the asset's materializations forgets the run's plan too, as Dagster forgets its
    # own per-symbol plans: once a later run rebuilds the status, the symbols that failed
    # before the wipe are missing, no longer failed.
    instance.wipe_assets([market_data.key])
    assert instance.get_latest_planned_materialization_info(market_data.key, "C") is None
    [later] = materialize(instance, "market_data", ["A"], run_config=config)
    assert later.success
    status = instance.get_status_by_partition(market_data.key, symbols, symbol_partitions)
    assert {k: v.value for k, v in status.items() if v is not None} == {"A": "MATERIALIZED"}


def test_rebuild_reloads_and_recomputes_every_active_symbol(instance, db):
    from mltrading_assets.db.symbols import add_symbols
    from mltrading_assets.lib.launching import rebuild_all

    with db.begin() as conn:
        add_symbols(conn, ["AAPL", "MSFT"])
    register_partitions(instance, ["AAPL", "MSFT"])
    materialize(instance, "market_data", ["AAPL"], run_config=run_config())
    with db.begin() as conn:  # damage a stored bar: the rebuild must repair it
        conn.execute(sa.text("UPDATE market_data SET close = high WHERE symbol = 'AAPL'"))
    run = rebuild_all(instance, run_config=run_config())
    assert run.success
    with db.connect() as conn:
        damaged = conn.execute(
            sa.text("SELECT count(*) FROM market_data WHERE close = high AND symbol = 'AAPL'")
        ).scalar_one()
    assert damaged < 50  # only bars that genuinely close at their high
    for symbol in ("AAPL", "MSFT"):
        bars = table_count(db, "market_data", symbol=symbol)
        assert table_count(db, "feature_engineered_data", symbol=symbol) == bars > 1700
    assert set(materializations(instance, feature_engineered_data)) == {"AAPL", "MSFT"}
    assert materializations(instance, market_data)["AAPL"].metadata["rows_updated"].value > 1000


def test_refresh_overlaps_features_with_the_next_bars_and_ranges_go_at_once(instance, db):
    from mltrading_assets.lib.launching import materialize, refresh

    symbols = ["R1", "R2", "R3", "R4", "R5"]
    register_partitions(instance, symbols)
    runs = refresh(instance, symbols, symbols_per_run=2, run_config=run_config())
    assert [(r.first, r.last) for r in runs["market_data"]] == [
        ("R1", "R2"),
        ("R3", "R4"),
        ("R5", "R5"),
    ]
    assert [(r.first, r.last) for r in runs["features"]] == [
        ("R1", "R2"),
        ("R3", "R4"),
        ("R5", "R5"),
    ]
    assert all(r.success for r in runs["market_data"] + runs["features"])
    for symbol in symbols:
        bars = table_count(db, "market_data", symbol=symbol)
        assert table_count(db, "feature_engineered_data", symbol=symbol) == bars > 1700

    # Features of the earlier ranges are run by a second process (so they can overlap the
    # next range's bars); the last one here, once its bars are in.
    def orchestrated_by(run_id: str) -> int:
        [start] = [
            e
            for e in instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_START"
        ]
        return start.dagster_event.pid

    pids = [orchestrated_by(r.run_id) for r in runs["features"]]
    assert pids[0] == pids[1] != os.getpid()
    assert pids[2] == os.getpid() == orchestrated_by(runs["market_data"][0].run_id)

    # One asset, two ranges at once (what `mltrading materialize --asset features` does to
    # keep two worker hosts busy): each range orchestrated by a process of its own.
    again = materialize(
        instance, "features", symbols[:4], symbols_per_run=2, run_config=run_config(),
        runs_at_once=2,
    )  # fmt: skip
    assert [(r.first, r.last, r.success) for r in again] == [
        ("R1", "R2", True),
        ("R3", "R4", True),
    ]
    first, second = (orchestrated_by(r.run_id) for r in again)
    assert len({first, second, os.getpid()}) == 3


def test_extended_set_is_written_and_incremental_equals_a_full_recompute(instance, db):
    from mltrading_assets.db.bars import read_bars
    from mltrading_assets.features import columns_for, compute_features

    def config(as_of: str) -> dict:
        return {
            "resources": {
                "source": {"config": {"kind": "synthetic", "as_of": as_of}},
                "processing": {"config": {"workers": 2, "feature_set": "extended"}},
            }
        }

    register_partitions(instance, ["XT"])
    for as_of in (AS_OF, "2026-11-23T18:00:00Z"):  # a full load, then 4 new bars
        for asset in ("market_data", "features"):
            [run] = materialize(instance, asset, ["XT"], run_config=config(as_of))
            assert run.success, asset
    with db.connect() as conn:
        bars = read_bars(conn, "XT", "synthetic")
        stored = pd.read_sql(
            sa.text("SELECT * FROM feature_engineered_data WHERE symbol = 'XT' ORDER BY timestamp"),
            conn,
        ).set_index("timestamp")
    assert len(stored) == len(bars) and set(stored["feature_set"]) == {"extended"}
    full = compute_features(bars, feature_set="extended")
    for column in columns_for("extended"):
        np.testing.assert_allclose(
            stored[column].to_numpy(dtype=float),
            full[column].to_numpy(),
            rtol=1e-9,
            atol=1e-6,
            equal_nan=True,
            err_msg=column,
        )


def test_a_misconfigured_source_fails_the_step_saying_why(instance, db):
    register_partitions(instance, ["AAPL"])
    config = {"resources": {"source": {"config": {"kind": "csv", "csv_dir": ""}}}}
    [run] = materialize(instance, "market_data", ["AAPL"], run_config=config)
    assert not run.success
    failure = next(
        e
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    )
    text = str(failure.dagster_event.step_failure_data.error)
    assert "the bar source is misconfigured: the csv source needs csv_dir" in text
    assert "BrokenProcessPool" not in text
