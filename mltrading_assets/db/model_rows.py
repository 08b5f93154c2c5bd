"""What the models read from and write to the database: feature rows for training, the
newest bar's features for prediction, and ``model_predictions``."""

import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.db.tables import model_predictions


def _select(columns: list[str]) -> str:
    return ", ".join(f"f.{c}" for c in columns)


# Feature rows of active symbols, beside their bar (whose in_progress flag says whether it is
# complete): what training and prediction both read.
_ACTIVE_FEATURE_ROWS = (
    "FROM public.feature_engineered_data f "
    "JOIN public.stock_info s ON s.symbol = f.symbol AND s.active "
    "JOIN public.market_data m ON m.symbol = f.symbol "
    'AND m."timestamp" = f."timestamp" AND m.source = f.source '
)


def load_training_rows(
    conn: sa.Connection, source: str, columns: list[str], since: pd.Timestamp
) -> pd.DataFrame:
    """Feature rows of the active symbols' complete bars since ``since``: symbol, timestamp,
    close and ``columns`` (as float32: what the learners use, at half the memory).

    Through COPY into a temporary file read by pyarrow: a year of 1,000 symbols is ~1.7 M
    rows, which row-by-row fetching turned into ~50 M Python floats. Symbols come back as a
    categorical column.
    """
    query = (
        'SELECT f.symbol, extract(epoch FROM f."timestamp") AS epoch, f.close, '
        f"{_select(columns)} {_ACTIVE_FEATURE_ROWS}"
        'WHERE f.source = %(source)s AND f."timestamp" >= %(since)s AND NOT m.in_progress'
    )
    cursor = conn.connection.cursor()
    statement = cursor.mogrify(query, {"source": source, "since": since.to_pydatetime()})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.csv"
        with path.open("wb") as out:
            cursor.copy_expert(
                f"COPY ({statement.decode()}) TO STDOUT WITH (FORMAT csv, HEADER)", out
            )
        types = {"symbol": pa.dictionary(pa.int32(), pa.string()), "close": pa.float64()}
        # Streamed block by block: read_csv held the whole text (~1 GB) besides the table.
        with pa_csv.open_csv(
            path,
            convert_options=pa_csv.ConvertOptions(
                column_types={**types, **dict.fromkeys(columns, pa.float32())}
            ),
        ) as reader:
            table = reader.read_all()
        # Arrow's buffers are freed as pandas takes each column over: one copy at a time.
        frame = table.to_pandas(self_destruct=True, split_blocks=True)
        del table
    frame.insert(1, "timestamp", pd.to_datetime(frame.pop("epoch"), unit="s", utc=True))
    return frame


def newest_feature_rows(
    conn: sa.Connection, symbols: list[str], source: str, columns: list[str]
) -> pd.DataFrame:
    """The newest bar with features of each of ``symbols`` that is active."""
    rows = conn.execute(
        sa.text(
            'SELECT DISTINCT ON (f.symbol) f.symbol, f."timestamp", m.in_progress, '
            f"{_select(columns)} {_ACTIVE_FEATURE_ROWS}"
            "WHERE f.symbol = ANY(:symbols) AND f.source = :source "
            'ORDER BY f.symbol, f."timestamp" DESC'
        ),
        {"symbols": symbols, "source": source},
    )
    frame = pd.DataFrame(rows.all(), columns=list(rows.keys()))
    frame[columns] = frame[columns].astype("float64")
    return frame


def write_predictions(
    conn: sa.Connection,
    rows: pd.DataFrame,
    source: str,
    model_name: str,
    model_version: str,
    horizon: int,
) -> int:
    """Upsert one prediction per (symbol, bar): the live model's call replaces an earlier
    one for the same bar (a new champion, a revised bar)."""
    if rows.empty:
        return 0
    values = [
        {
            "symbol": row.symbol,
            "timestamp": row.timestamp,
            "source": source,
            "probability_up": float(row.probability_up),
            "model_name": model_name,
            "model_version": model_version,
            "horizon_bars": horizon,
            "bar_in_progress": bool(row.in_progress),
        }
        for row in rows.itertuples(index=False)
    ]
    statement = postgresql.insert(model_predictions)
    statement = statement.on_conflict_do_update(
        constraint="model_predictions_bar_key",
        set_={
            name: statement.excluded[name]
            for name in (
                "probability_up",
                "model_name",
                "model_version",
                "horizon_bars",
                "bar_in_progress",
            )
        }
        | {"predicted_at": sa.func.now()},
    )
    conn.execute(statement, values)
    return len(values)
