"""The replaced system, reproduced for comparison: one fresh Python subprocess per symbol that
imports the libraries, fetches bars, computes features with our own function and writes both
with pandas ``to_sql`` (no COPY, no batching), one symbol after another."""

import subprocess
import sys
import time

import sqlalchemy as sa

BASELINE_SCHEMA = "baseline"

_CHILD = r"""
import sys
import pandas as pd
import sqlalchemy as sa
from mltrading_assets.features import compute_features
from mltrading_assets.sources import build_source

url, symbol, as_of = sys.argv[1:4]
source = build_source("synthetic", as_of=as_of)
end = source.now()
bars = source.fetch(symbol, end - pd.Timedelta(days=365), end)
engine = sa.create_engine(url)
frame = bars.reset_index()
frame.insert(0, "symbol", symbol)
frame.to_sql("market_data", engine, schema="baseline", if_exists="append", index=False)
features = compute_features(bars).reset_index()
features.insert(0, "symbol", symbol)
features.to_sql("feature_engineered_data", engine, schema="baseline", if_exists="append",
                index=False)
engine.dispose()
"""


def prepare(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {BASELINE_SCHEMA} CASCADE")
        conn.exec_driver_sql(f"CREATE SCHEMA {BASELINE_SCHEMA}")


def run(url: str, symbols: list[str], as_of: str) -> tuple[float, int]:
    """Process ``symbols`` the old way; returns (wall seconds, rows written)."""
    started = time.perf_counter()
    for symbol in symbols:
        subprocess.run([sys.executable, "-c", _CHILD, url, symbol, as_of], check=True)
    wall = time.perf_counter() - started
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = sum(
            conn.execute(sa.text(f"SELECT count(*) FROM {BASELINE_SCHEMA}.{table}")).scalar_one()
            for table in ("market_data", "feature_engineered_data")
        )
    engine.dispose()
    return wall, rows
