"""Sources: the yfinance path on recorded frames of yfinance's exact shapes, the CSV folder,
the synthetic generator, and validation of whatever comes back."""

import numpy as np
import pandas as pd
import pytest

from mltrading_assets.sources import (
    BadBarsError,
    CsvSource,
    InvalidSymbolError,
    SymbolNotFoundError,
    SyntheticSource,
    YahooSource,
    build_source,
    normalize_symbols,
    validate_symbol,
)
from mltrading_assets.sources.synthetic import session_bar_starts
from mltrading_assets.sources.validation import validate_bars
from mltrading_assets_tests.conftest import FIXTURES

UTC = "UTC"


def recorded_hourly_ea() -> pd.DataFrame:
    """Real EA 15-minute bars resampled to the hourly bars yfinance serves (start at :30)."""
    raw = pd.read_csv(FIXTURES / "EA-15m.csv")
    raw.index = pd.DatetimeIndex(pd.to_datetime(raw.pop("Datetime"), utc=True)).tz_convert(
        "America/New_York"
    )
    hourly = raw.resample("1h", offset="30min").agg(
        {
            "Open": "first",
            "High": "max",
            "Low": "min",
            "Close": "last",
            "Adj Close": "last",
            "Volume": "sum",
        }
    )
    # Hours without trades come back from resample (and from Yahoo) as all-NaN rows.
    hourly.index.name = "Datetime"
    # The regular session only, as yfinance returns it with prepost=False (the file has
    # pre-market bars, which are off the hourly grid and rejected).
    return hourly.between_time("09:30", "15:30")


def as_yf_download(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """The shape of yfinance 1.7 `download`: MultiIndex (Price, Ticker), sorted by Price."""
    wide = frame.copy()
    wide.columns = pd.MultiIndex.from_product([wide.columns, [ticker]], names=["Price", "Ticker"])
    return wide.sort_index(axis=1, level=0)


START = pd.Timestamp("2026-05-01", tz=UTC)
END = pd.Timestamp("2026-06-10", tz=UTC)


def test_yahoo_normalizes_the_multiindex_download_shape():
    hourly = recorded_hourly_ea()
    source = YahooSource(downloader=lambda s, start, end: as_yf_download(hourly, s))
    bars = source.fetch("EA", START, END)
    assert list(bars.columns) == ["open", "high", "low", "close", "adj_close", "volume"]
    assert str(bars.index.tz) == UTC
    assert bars.index.name == "timestamp"
    # All-NaN padding hours are dropped; every real hour is kept with its values.
    expected = hourly.dropna(how="all", subset=["Open", "High", "Low", "Close"])
    assert len(bars) == len(expected)
    first = expected.iloc[0]
    assert bars.index[0] == expected.index[0].tz_convert(UTC)
    assert bars.iloc[0]["open"] == first["Open"] and bars.iloc[0]["volume"] == first["Volume"]


def test_yahoo_accepts_flat_columns_and_missing_adj_close():
    hourly = recorded_hourly_ea().drop(columns="Adj Close")
    source = YahooSource(downloader=lambda s, start, end: hourly)
    bars = source.fetch("EA", START, END)
    assert (bars["adj_close"] == bars["close"]).all()


def test_yahoo_frame_for_another_ticker_is_bad_input():
    hourly = recorded_hourly_ea()
    source = YahooSource(downloader=lambda s, start, end: as_yf_download(hourly, "MSFT"))
    with pytest.raises(BadBarsError, match="other tickers"):
        source.fetch("EA", START, END)


def test_yahoo_empty_window_is_no_bars_not_an_error():
    # yfinance only gets this far for a symbol Yahoo knows (an unknown one is a 404,
    # see test_yahoo.py): no rows in the window means no trading then.
    empty = as_yf_download(recorded_hourly_ea().iloc[:0], "QUIET")
    source = YahooSource(downloader=lambda s, start, end: empty)
    bars = source.fetch("QUIET", START, END)
    assert bars.empty
    assert list(bars.columns) == ["open", "high", "low", "close", "adj_close", "volume"]


def test_yahoo_only_asks_for_the_730_days_it_serves():
    asked = {}

    def downloader(symbol, start, end):
        asked["start"] = start
        return as_yf_download(recorded_hourly_ea(), symbol)

    YahooSource(downloader=downloader).fetch("EA", pd.Timestamp("2020-01-01", tz=UTC), END)
    assert END - asked["start"] <= pd.Timedelta(days=730)


def write_csv(tmp_path, symbol: str, text: str):
    (tmp_path / f"{symbol}.csv").write_text(text)
    return CsvSource(tmp_path)


def test_csv_folder_source_reads_yfinance_layout():
    # Real ASAI.L hourly bars from yfinance's test data (London, +01:00).
    source = CsvSource(FIXTURES / "csv")
    bars = source.fetch("ASAI.L", pd.Timestamp("2024-01-01", tz=UTC), END)
    assert bars.index[0] == pd.Timestamp("2024-10-21 09:00", tz=UTC)  # 10:00+01:00
    assert bars.iloc[0]["high"] == 72


def test_csv_missing_columns_and_naive_timestamps_are_refused(tmp_path):
    source = write_csv(
        tmp_path, "AB", "Datetime,Open,High,Close\n2026-01-05 09:30:00-05:00,1,2,1\n"
    )
    with pytest.raises(BadBarsError, match=r"missing columns \['Low', 'Volume'\]"):
        source.fetch("AB", START - pd.Timedelta(days=400), END)
    source = write_csv(
        tmp_path, "CD", "Datetime,Open,High,Low,Close,Volume\n2026-01-05 09:30:00,1,2,1,1,5\n"
    )
    with pytest.raises(BadBarsError, match="without a UTC offset"):
        source.fetch("CD", pd.Timestamp("2025-01-01", tz=UTC), END)


def test_csv_unknown_symbol_is_not_found(tmp_path):
    with pytest.raises(SymbolNotFoundError, match="no file"):
        CsvSource(tmp_path).fetch("NOPE", START, END)


def bars_frame(rows: list[tuple]) -> pd.DataFrame:
    index = pd.DatetimeIndex([r[0] for r in rows], tz=UTC)
    values = [r[1:] for r in rows]
    frame = pd.DataFrame(values, index=index, columns=["open", "high", "low", "close", "volume"])
    frame["adj_close"] = frame["close"]
    return frame


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("2026-01-05 14:30", np.nan, 2, 1, 1.5, 10)], "missing \\(NaN\\) prices"),
        ([("2026-01-05 14:30", 0.0, 2, 1, 1.5, 10)], "zero or negative prices"),
        ([("2026-01-05 14:30", -1, 2, 1, 1.5, 10)], "zero or negative prices"),
        ([("2026-01-05 14:30", 1.5, 1, 2, 1.5, 10)], "high below low"),
        ([("2026-01-05 14:30", 1.5, 2, 1, 1.5, -10)], "negative volume"),
        (
            [("2026-01-05 14:30", 1.5, 2, 1, 1.5, 10), ("2026-01-05 14:30", 1.6, 2, 1, 1.5, 10)],
            "duplicate timestamps at 2026-01-05 14:30:00\\+00:00",
        ),
    ],
)
def test_validation_names_the_problem_and_the_bar(rows, message):
    with pytest.raises(BadBarsError, match=f"XYZ: rejected {len(rows)} bars: .*{message}"):
        validate_bars(bars_frame(rows), "XYZ")


def test_validation_refuses_naive_timestamps():
    frame = bars_frame([("2026-01-05 14:30", 1.5, 2, 1, 1.5, 10)]).tz_localize(None)
    with pytest.raises(BadBarsError, match="no time zone"):
        validate_bars(frame, "XYZ")


def test_synthetic_bars_are_deterministic_and_window_independent():
    source = SyntheticSource(as_of=pd.Timestamp("2026-11-20 21:00", tz=UTC))
    year = source.fetch("AAPL", pd.Timestamp("2025-11-20", tz=UTC), source.now())
    week = source.fetch("AAPL", pd.Timestamp("2026-11-14", tz=UTC), source.now())
    pd.testing.assert_frame_equal(week, year.loc[week.index])
    later = SyntheticSource(as_of=pd.Timestamp("2026-11-25 21:00", tz=UTC))
    pd.testing.assert_frame_equal(later.fetch("AAPL", week.index[0], source.now()), week)
    other = source.fetch("MSFT", pd.Timestamp("2026-11-14", tz=UTC), source.now())
    assert not np.allclose(other["close"], week["close"])
    assert (year["low"] <= year[["open", "close"]].min(axis=1)).all()
    assert (year["high"] >= year[["open", "close"]].max(axis=1)).all()


def test_synthetic_bars_follow_nyse_sessions():
    starts = session_bar_starts(
        pd.Timestamp("2025-11-24", tz=UTC), pd.Timestamp("2025-12-27", tz=UTC)
    )
    local = starts.tz_convert("America/New_York")
    per_day = pd.Series(1, index=local.date).groupby(level=0).sum()
    assert per_day[pd.Timestamp("2025-11-24").date()] == 7  # a full day: 9:30 … 15:30
    assert per_day[pd.Timestamp("2025-11-28").date()] == 4  # early close at 13:00
    assert pd.Timestamp("2025-11-27").date() not in per_day.index  # Thanksgiving
    assert pd.Timestamp("2025-12-25").date() not in per_day.index  # Christmas
    assert set(local.minute) == {30}


def test_symbols_are_validated_and_normalized():
    assert normalize_symbols([" aapl", "BRK-B", "^GSPC", "EURUSD=X", "AAPL"]) == [
        "AAPL",
        "BRK-B",
        "^GSPC",
        "EURUSD=X",
    ]
    for bad in ["", "AAPL; DROP TABLE market_data", "A" * 16, "AA PL", "aapl"]:
        with pytest.raises(InvalidSymbolError, match="invalid symbol"):
            validate_symbol(bad)


def test_unknown_source_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown source kind 'bloomberg'"):
        build_source("bloomberg")
    with pytest.raises(ValueError, match="needs csv_dir"):
        build_source("csv")


def test_bars_off_the_exchange_hourly_grid_are_rejected_with_examples(tmp_path):
    # A file written with a fixed -05:00 offset all year: summer bars land at 10:30-16:30
    # New York, the last one after the close.
    rows = "".join(
        f"2026-07-14 {hour:02d}:30:00-05:00,10,11,9,10.5,10.5,100\n" for hour in range(9, 16)
    )
    source = write_csv(tmp_path, "SHIFT", "Datetime,Open,High,Low,Close,Adj Close,Volume\n" + rows)
    with pytest.raises(BadBarsError, match=r"off the XNYS hourly grid .* 2026-07-14 20:30"):
        source.fetch(
            "SHIFT", pd.Timestamp("2026-07-01", tz=UTC), pd.Timestamp("2026-08-01", tz=UTC)
        )


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-07-14 08:30:00-04:00",  # pre-market
        "2026-07-14 10:00:00-04:00",  # on the hour, not on the 9:30 grid
        "2026-11-27 13:30:00-05:00",  # after the 13:00 early close (day after Thanksgiving)
        "2026-07-04 10:30:00-04:00",  # a holiday (Independence Day, observed 7/3 in 2026)
    ],
)
def test_a_single_stray_bar_is_rejected(tmp_path, stamp):
    text = "Datetime,Open,High,Low,Close,Volume\n2026-07-14 09:30:00-04:00,10,11,9,10.5,100\n"
    text += f"{stamp},10,11,9,10.5,100\n"
    source = write_csv(tmp_path, "STRAY", text)
    with pytest.raises(BadBarsError, match="off the XNYS hourly grid"):
        source.fetch(
            "STRAY", pd.Timestamp("2026-07-01", tz=UTC), pd.Timestamp("2026-12-01", tz=UTC)
        )


def test_the_grid_follows_the_symbol_exchange_and_early_closes():
    from mltrading_assets.trading_calendar import exchange_of, off_grid

    assert exchange_of("AAPL") == "XNYS" and exchange_of("BRK-B") == "XNYS"
    assert exchange_of("ASAI.L") == "XLON"
    assert exchange_of("EURUSD=X") is None and exchange_of("BTC-USD") is None
    early = pd.DatetimeIndex(
        ["2026-11-27 09:30", "2026-11-27 12:30", "2026-11-27 13:30"], tz="America/New_York"
    ).tz_convert(UTC)
    assert off_grid(early, "XNYS").tolist() == [False, False, True]
    london = pd.DatetimeIndex(["2024-10-22 08:00", "2024-10-22 08:30"], tz="Europe/London")
    assert off_grid(london.tz_convert(UTC), "XLON").tolist() == [False, True]
