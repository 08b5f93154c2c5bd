"""Bars that stay true. Across corporate actions: after a split (reported, or a silent
back-adjustment) the stored history and its features equal what a full reload from the
source gives; dividends land in ``corporate_actions`` and in ``adj_close``. Through yfinance
against the local Yahoo-compatible server, and through CSV files."""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mltrading_assets.db.bars import read_bars
from mltrading_assets.db.corporate_actions import basis_change
from mltrading_assets.db.tables import market_data
from mltrading_assets.features import compute_features
from mltrading_assets.names import MetadataKeys, RunTags
from mltrading_assets.sources.yahoo import YahooSource
from mltrading_assets.workers.feature_task import build_features
from mltrading_assets.workers.harness import WorkSpec, init_worker
from mltrading_assets.workers.isolation import run_isolated
from mltrading_assets_tests.conftest import table_count
from mltrading_assets_tests.fake_yahoo import Split
from mltrading_assets_tests.test_yahoo import last_sessions, load, stored


def compute(spec: WorkSpec, symbols: list[str]) -> dict:
    outcomes = run_isolated(
        build_features,
        symbols,
        initializer=init_worker,
        initargs=(spec,),
        workers=1,
        timeout_seconds=120,
    )
    return {o.symbol: o for o in outcomes}


def actions(engine: sa.Engine, symbol: str) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    "SELECT ex_date::text, kind, value FROM corporate_actions "
                    "WHERE symbol = :s ORDER BY ex_date, kind"
                ),
                {"s": symbol},
            )
        ]


def assert_features_equal_a_full_recompute(engine: sa.Engine, symbol: str, source: str) -> None:
    with engine.connect() as conn:
        bars = read_bars(conn, symbol, source)
        rows = pd.read_sql(
            sa.text(
                "SELECT * FROM feature_engineered_data WHERE symbol = :s AND source = :src "
                'ORDER BY "timestamp"'
            ),
            conn,
            params={"s": symbol, "src": source},
        )
    full = compute_features(bars)
    assert len(rows) == len(bars)
    for column in ("returns", "sma_20", "volatility_20", "macd", "bb_upper"):
        if column in full.columns:
            np.testing.assert_allclose(
                rows[column].to_numpy(dtype=float),
                full[column].to_numpy(),
                rtol=1e-9,
                atol=1e-9,
                equal_nan=True,
                err_msg=column,
            )


def split_day(back: int = 3) -> str:
    return last_sessions(back).index[0].strftime("%Y-%m-%d")


def test_a_reported_split_rebases_the_history_and_its_features(yahoo, spec, db):
    assert load(spec, ["AAPL"])["AAPL"].ok
    assert compute(spec, ["AAPL"])["AAPL"].ok
    before = stored(db, "AAPL")
    ex_date = split_day()
    yahoo.splits["AAPL"] = [Split(ex_date, 2, 1)]  # Yahoo back-adjusts every earlier bar

    outcome = load(spec, ["AAPL"])["AAPL"]

    assert outcome.ok, outcome.error
    assert "split 2:1 on " + ex_date in outcome.details[MetadataKeys.REBASED]
    rows = stored(db, "AAPL")
    served = yahoo.bars("AAPL").loc[rows.index]
    # Every stored bar is on the new basis: what a full reload from Yahoo gives.
    np.testing.assert_allclose(rows["close"], served["close"], rtol=1e-9)
    early = rows.index[0]
    assert rows.loc[early, "close"] == pytest.approx(before.loc[early, "close"] / 2, rel=1e-3)
    assert actions(db, "AAPL") == [(ex_date, "split", 2.0)]
    # Features computed on the old basis are gone, then recomputed from the first bar.
    assert compute(spec, ["AAPL"])["AAPL"].ok
    assert_features_equal_a_full_recompute(db, "AAPL", "yahoo")
    # The next refresh sees the split as known: no second re-basing.
    again = load(spec, ["AAPL"])["AAPL"]
    assert MetadataKeys.REBASED not in again.details


def test_a_silent_back_adjustment_is_detected_in_the_overlap(yahoo, spec, db):
    assert load(spec, ["MSFT"])["MSFT"].ok
    # Two sessions back: the 3-day overlap holds a session of bars from before it.
    yahoo.splits["MSFT"] = [Split(split_day(2), 3, 1, announced=False)]
    outcome = load(spec, ["MSFT"])["MSFT"]
    assert "without an event" in outcome.details[MetadataKeys.REBASED]
    rows = stored(db, "MSFT")
    np.testing.assert_allclose(rows["close"], yahoo.bars("MSFT").loc[rows.index, "close"])
    assert actions(db, "MSFT") == []  # nothing was reported, nothing is invented


def test_a_silent_back_adjustment_is_seen_through_the_sources_rounding(db):
    # As Yahoo sends them: prices rounded to 4 decimals, before and after a silent 3:1.
    # At ~$20 the ratios of the older bars then differ by up to ~5e-6 among themselves.
    hours = pd.date_range("2026-11-30 14:30", periods=8, freq="h", tz="UTC")
    closes = np.round(np.linspace(20.1234, 21.9876, len(hours)), 4)
    with db.begin() as conn:
        conn.execute(
            market_data.insert(),
            [
                {"symbol": "MSFT", "timestamp": t, "source": "yahoo"}
                | dict.fromkeys(["open", "high", "low", "close", "adj_close", "volume"], c)
                for t, c in zip(hours, closes.tolist(), strict=True)
            ],
        )
        fetched = pd.DataFrame({"close": np.round(closes / 3, 4)}, index=hours)
        fetched.iloc[4:] = closes[4:, None]  # the bars stored after the adjustment
        rebase = basis_change(conn, "MSFT", "yahoo", fetched, pd.DataFrame(), hours[-1])
    assert rebase is not None
    assert rebase[0] == pytest.approx(3, rel=1e-5)


def test_bars_older_than_the_source_serves_are_adjusted_by_the_ratio(yahoo, spec, db, monkeypatch):
    # Yahoo serves 730 days of 1h bars; pretend 10, so part of the stored 30 days is older
    # than what can be re-fetched and must be adjusted in place.
    assert load(spec, ["NVDA"])["NVDA"].ok
    monkeypatch.setattr(YahooSource, "max_history", pd.Timedelta(days=10))
    yahoo.splits["NVDA"] = [Split(split_day(), 4, 1)]
    outcome = load(spec, ["NVDA"])["NVDA"]
    assert outcome.ok, outcome.error
    older = int(outcome.details[MetadataKeys.REBASED].split(" older bars")[0].rsplit(" ", 1)[1])
    assert older > 50
    rows = stored(db, "NVDA")
    served = yahoo.bars("NVDA").loc[rows.index]
    # The server rounds its adjusted prices to 4 decimals; we divided the rounded originals.
    np.testing.assert_allclose(rows["close"], served["close"], atol=2e-4)
    # Yahoo does not split-adjust intraday volume: neither are the older bars.
    np.testing.assert_allclose(rows["volume"], served["volume"])


def test_dividends_are_stored_and_adjust_earlier_closes(yahoo, spec, db):
    ex_date = split_day(2)
    yahoo.dividends["KO"] = {ex_date: 0.5}
    assert load(spec, ["KO"])["KO"].ok
    assert actions(db, "KO") == [(ex_date, "dividend", 0.5)]
    rows = stored(db, "KO")
    with db.connect() as conn:
        adj = pd.read_sql(
            sa.text(
                "SELECT \"timestamp\", close, adj_close FROM market_data WHERE symbol = 'KO' "
                'ORDER BY "timestamp"'
            ),
            conn,
        ).set_index("timestamp")
    ex_open = pd.Timestamp(f"{ex_date} 09:30", tz="America/New_York")
    before = adj[adj.index < ex_open]
    after = adj[adj.index >= ex_open]
    factor = 1 - 0.5 / before["close"].iloc[-1]
    np.testing.assert_allclose(before["adj_close"], before["close"] * factor, rtol=1e-12)
    np.testing.assert_allclose(after["adj_close"], after["close"], rtol=1e-12)
    assert len(rows) == len(adj)


CSV_HEADER = "Datetime,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits\n"


def csv_rows(bars: pd.DataFrame, splits: dict | None = None) -> str:
    lines = []
    for when, bar in bars.iterrows():
        local = when.tz_convert("America/New_York").isoformat(sep=" ")
        split = (splits or {}).get(when, 0)
        lines.append(
            f"{local},{bar.open},{bar.high},{bar.low},{bar.close},{bar.close},"
            f"{bar.volume:.0f},0,{split}"
        )
    return CSV_HEADER + "\n".join(lines) + "\n"


def test_a_split_in_a_csv_file_rebases_the_history(db, database_url, tmp_path):
    from mltrading_assets_tests.fake_yahoo import FakeYahoo

    bars = FakeYahoo(now=last_sessions(1)["close"].iloc[-1]).bars("CSVX")
    bars = bars[bars.index >= bars.index[-1] - pd.Timedelta(days=20)]
    (tmp_path / "CSVX.csv").write_text(csv_rows(bars))
    spec = WorkSpec(
        database_url=database_url,
        source={"kind": "csv", "csv_dir": str(tmp_path)},
        history_days=3650,
    )
    assert load(spec, ["CSVX"])["CSVX"].ok
    # The file is rewritten as yfinance writes it after a 2:1 split three sessions back.
    ex_open = pd.Timestamp(f"{split_day()} 09:30", tz="America/New_York")
    adjusted = bars.copy()
    earlier = adjusted.index < ex_open
    adjusted.loc[earlier, ["open", "high", "low", "close"]] /= 2
    adjusted.loc[earlier, "volume"] *= 2
    first_after = adjusted.index[~earlier][0]
    (tmp_path / "CSVX.csv").write_text(csv_rows(adjusted, {first_after: 2}))

    outcome = load(spec, ["CSVX"])["CSVX"]

    assert outcome.ok, outcome.error
    assert "split 2:1" in outcome.details[MetadataKeys.REBASED]
    with db.connect() as conn:
        rows = read_bars(conn, "CSVX", "csv")
    np.testing.assert_allclose(rows["close"], adjusted["close"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(rows["volume"], adjusted["volume"].to_numpy())
    assert table_count(db, "corporate_actions", symbol="CSVX") == 1


def test_a_rebased_history_is_named_in_the_run_metadata_and_system_logs(
    instance, db, database_url, tmp_path
):
    import dagster as dg

    from mltrading_assets.defs.operations.sensors import log_successful_runs
    from mltrading_assets.lib.launching import materialize
    from mltrading_assets.lib.partitions import register_partitions
    from mltrading_assets.lib.resources import PostgresResource
    from mltrading_assets_tests.fake_yahoo import FakeYahoo

    bars = FakeYahoo(now=last_sessions(1)["close"].iloc[-1]).bars("SPLT")
    bars = bars[bars.index >= bars.index[-1] - pd.Timedelta(days=20)]
    (tmp_path / "SPLT.csv").write_text(csv_rows(bars))
    config = {"resources": {"source": {"config": {"kind": "csv", "csv_dir": str(tmp_path)}}}}
    register_partitions(instance, ["SPLT"])
    [first] = materialize(instance, "market_data", ["SPLT"], run_config=config)
    assert first.success
    assert RunTags.REBASED not in instance.get_run_by_id(first.run_id).tags
    ex_open = pd.Timestamp(f"{split_day()} 09:30", tz="America/New_York")
    adjusted = bars.copy()
    adjusted.loc[adjusted.index < ex_open, ["open", "high", "low", "close"]] /= 2
    (tmp_path / "SPLT.csv").write_text(csv_rows(adjusted, {adjusted.index[-10]: 2}))

    [run] = materialize(instance, "market_data", ["SPLT"], run_config=config)

    assert run.success
    [record] = instance.fetch_materializations(dg.AssetKey("market_data"), limit=1).records
    assert "split 2:1" in record.asset_materialization.metadata[MetadataKeys.REBASED].value
    # The run names the symbol (the runs list filters by it; the log sensor reads its notes).
    assert instance.get_run_by_id(run.run_id).tags[RunTags.REBASED] == "SPLT"
    log_successful_runs(
        dg.build_run_status_sensor_context(
            sensor_name=log_successful_runs.name,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(run.run_id),
            dagster_event=next(
                e.dagster_event
                for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS"
            ),
            resources={"database": PostgresResource(url=database_url)},
        )
    )
    with db.connect() as conn:
        notes = conn.execute(
            sa.text("SELECT notes FROM system_logs WHERE run_id = :r"), {"r": run.run_id}
        ).scalar_one()
    assert notes.startswith("rebased SPLT: history re-based by 1/2")


def test_the_bar_in_progress_is_marked_and_its_features_follow_it_to_completion(db, database_url):
    def synthetic(as_of: str) -> WorkSpec:
        return WorkSpec(
            database_url=database_url,
            source={"kind": "synthetic", "as_of": as_of},
            history_days=40,
        )

    # 12:10 New York on a Friday: the 11:30 bar has traded 40 of its 60 minutes.
    partial = synthetic("2026-11-20T17:10:00Z")
    outcome = load(partial, ["PROG"])["PROG"]
    assert "2026-11-20 11:30 New York, partial until 12:30" in outcome.details["in_progress_bar"]
    assert compute(partial, ["PROG"])["PROG"].ok
    with db.connect() as conn:
        flags = pd.read_sql(
            sa.text(
                "SELECT \"timestamp\", in_progress, volume FROM market_data WHERE symbol = 'PROG' "
                'ORDER BY "timestamp" DESC LIMIT 2'
            ),
            conn,
        )
    assert flags["in_progress"].tolist() == [True, False]
    partial_volume = flags["volume"].iloc[0]

    done = synthetic("2026-11-20T21:00:00Z")  # after the close
    assert "in_progress_bar" not in load(done, ["PROG"])["PROG"].details
    assert compute(done, ["PROG"])["PROG"].ok
    with db.connect() as conn:
        bar = conn.execute(
            sa.text(
                "SELECT in_progress, volume FROM market_data WHERE symbol = 'PROG' "
                "AND \"timestamp\" = '2026-11-20 16:30+00'"
            )
        ).one()
    assert bar.in_progress is False and bar.volume > partial_volume
    # Its features were recomputed from the completed bar, as a full recompute gives them.
    assert_features_equal_a_full_recompute(db, "PROG", "synthetic")


def test_hours_left_out_are_fetched_again_then_remembered_as_known(yahoo, spec, db):
    served = yahoo.bars("AAPL")
    dropped = set(served.index[-60:-58])  # two hours about nine sessions back
    yahoo.dropped["AAPL"] = dropped
    yahoo.dropped["MSFT"] = set(yahoo.bars("MSFT").index[-60:-58])
    assert load(spec, ["AAPL", "MSFT"])["AAPL"].ok
    assert not dropped & set(stored(db, "AAPL").index)

    # Yahoo supplies AAPL's hours later; MSFT's never come.
    del yahoo.dropped["AAPL"]
    outcomes = load(spec, ["AAPL", "MSFT"])

    assert outcomes["AAPL"].details["gaps_filled"] == 2
    assert dropped <= set(stored(db, "AAPL").index)
    assert outcomes["MSFT"].details["gaps_filled"] == 0
    assert "known_gaps_added" in outcomes["MSFT"].details
    assert table_count(db, "known_gaps", symbol="MSFT") == 2
    # Known now: the next refresh asks for its overlap only.
    again = load(spec, ["MSFT"])["MSFT"]
    assert "gaps_filled" not in again.details


def test_a_monday_refresh_rereads_three_sessions_not_three_calendar_days():
    """Three calendar days back from Monday's last bar held one bar of Friday: too few to
    see a split or a silent back-adjustment of the days before (these tests failed on a
    Monday evening)."""
    from mltrading_assets.workers.bar_task import overlap_start

    monday = pd.Timestamp("2026-11-23 15:30", tz="America/New_York").tz_convert("UTC")
    wednesday_open = pd.Timestamp("2026-11-18 09:30", tz="America/New_York")
    assert overlap_start(monday, 3, "XNYS") == wednesday_open
    # A currency has no sessions: calendar days.
    assert overlap_start(monday, 3, None) == monday - pd.Timedelta(days=3)
