"""table_layout: the application tables at N symbols x 2 years of hourly bars, and whether
PostgreSQL partitioning pays off for the queries the platform runs on them.

Three layouts of the same rows, each in a schema of its own:

- ``plain``: the platform's own tables (``sql/``), one heap and its unique
  (symbol, timestamp, source) index each;
- ``by_symbol``: ``PARTITION BY HASH (symbol)``, 16 partitions (``market_data`` only: a
  symbol's queries would touch one partition, which is all hashing can offer);
- ``by_month``: ``PARTITION BY RANGE ("timestamp")``, a partition per month (both tables:
  the training read of the last year could skip the year before).

The rows are laid out as the platform leaves them: the first year symbol after symbol (a new
symbol's year of history arrives in one write), the second hour after hour (each tick adds a
bar to every symbol). After loading, VACUUM ANALYZE, as autovacuum would have by then.

Timed on each layout, warm (each query once before it is timed), medians of 3:
``newest_bar`` (the bar task's ``max(timestamp)`` per symbol), ``bar_window`` (the feature
task's read: the bars since 500 bars before its newest feature), ``feature_tail`` (the newest
24 feature rows, as the chart and prediction read them), each over 1,000 symbols one by one;
``check_window`` (a 500-symbol check run's read of 30 days), ``hourly_upsert`` (one new bar
for every symbol, ON CONFLICT, rolled back) and ``training_read`` (the model's year of
feature rows beside their bars, through COPY, read to the end and dropped).
"""

import statistics
import time
import uuid
from collections.abc import Callable

import pandas as pd
import sqlalchemy as sa

SOURCE = "synthetic"
YEARS = 2
SAMPLE = 1000
HASH_PARTITIONS = 16
# The session of the benchmark's other scenarios: the data ends with Friday 2026-11-20.
END = pd.Timestamp("2026-11-21", tz="UTC")
DOUBLE, SMALL = "double precision", "smallint"
KEPT = "mltrading_bench_layout"
# Statements timed one symbol at a time over the sample, reported per symbol.
PER_SYMBOL = ("newest_bar", "bar_window", "feature_tail")
# The tables' unique (symbol, timestamp, source) constraints, as sql/ names them.
UNIQUE_KEYS = {
    "market_data": "market_data_bar_key",
    "feature_engineered_data": "feature_engineered_data_bar_key",
}
# The checks judge the last processing.check_window_days (default 30).
CHECK_WINDOW = pd.Timedelta(days=30)


def table_layout(server: str, symbols: int, keep: bool = False) -> list[str]:
    """Load (or, with ``keep``, reuse a kept load of the same size), time, print."""
    from mltrading_assets.db.embedded import ensure_database
    from mltrading_assets.db.engine import create_app_engine
    from mltrading_assets.db.migrate import apply_schema
    from mltrading_assets.db.symbols import add_symbols

    # Loading 10,000 symbols takes ~12 minutes: a kept load is found by its name.
    name = KEPT if keep else f"mltrading_bench_layout_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    ensure_database(server, name)
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = create_app_engine(url, pool_size=1, application_name="bench-layout")
    names = [f"B{i:05d}" for i in range(symbols)]
    starts = _bar_starts()
    lines = []
    try:
        if _loaded(engine) == symbols:
            print(f"reusing the kept tables of {symbols} symbols in database {name}", flush=True)
        else:
            apply_schema(engine)
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE public.stock_info CASCADE")
                add_symbols(conn, names)
            started = time.perf_counter()
            _load_plain(engine, names, starts)
            _copy_layouts(engine)
            loaded = time.perf_counter() - started
            print(f"loaded {symbols} symbols x {len(starts)} bars in {loaded:.0f} s", flush=True)
        lines.append(_sizes_line(engine, symbols, len(starts)))
        print(lines[-1], flush=True)
        # Twice round the layouts: what one layout's reads leave in the cache is not the
        # next one's advantage (the tables are larger than the machine's memory).
        for round_ in (1, 2):
            for layout in ("plain", "by_symbol", "by_month"):
                lines.append(_timings_line(engine, layout, names, starts, round_))
                print(lines[-1], flush=True)
        lines.append(_plans_line(engine, names, starts))
        print(lines[-1], flush=True)
    finally:
        engine.dispose()
        if not keep:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return lines


def _loaded(engine: sa.Engine) -> int:
    """Symbols of a finished load in this database (the last table of a load is there), or 0."""
    with engine.connect() as conn:
        done = conn.exec_driver_sql(
            "SELECT to_regclass('by_month.feature_engineered_data') IS NOT NULL"
        ).scalar_one()
        if not done:
            return 0
        return conn.exec_driver_sql("SELECT count(*) FROM public.stock_info").scalar_one()


def _bar_starts() -> pd.DatetimeIndex:
    from mltrading_assets.trading_calendar import grid_starts

    return grid_starts("XNYS", END - pd.DateOffset(years=YEARS), END)


def _columns(engine: sa.Engine, table: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.exec_driver_sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = 'public' AND table_name = '{table}' "
                "ORDER BY ordinal_position"
            )
        ]


def _load_plain(engine: sa.Engine, names: list[str], starts: pd.DatetimeIndex) -> None:
    """The platform's own tables, filled in the order the platform writes them; the unique
    index dropped while loading and built after (the same index, built faster)."""
    first_year = starts[starts < END - pd.DateOffset(years=1)]
    second_year = starts[len(first_year) :]
    features = _columns(engine, "feature_engineered_data")
    copied = {"symbol", "timestamp", "source", "open", "high", "low", "close", "volume"}

    def value(column: str, kind: str) -> str:
        if column in copied:
            return f'm."{column}"'
        if kind == DOUBLE:
            return "random()"
        if kind == SMALL:
            return "0"
        return "'full'" if kind == "text" else "now()"

    values = ", ".join(value(column, kind) for column, kind in features)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'; SET work_mem = '1GB'")
        # What an interrupted load left.
        conn.exec_driver_sql("TRUNCATE public.market_data, public.feature_engineered_data CASCADE")
        for table, key in UNIQUE_KEYS.items():
            conn.exec_driver_sql(
                f"ALTER TABLE public.{table} DROP CONSTRAINT IF EXISTS {key} CASCADE"
            )
        for part, order in ((first_year, "s.symbol, t.at"), (second_year, "t.at, s.symbol")):
            conn.execute(
                sa.text(
                    'INSERT INTO public.market_data (symbol, "timestamp", source, open, high, '
                    "low, close, adj_close, volume) "
                    "SELECT s.symbol, t.at, :source, p, p * 1.01, p * 0.99, p, p, 1000 "
                    "FROM unnest(CAST(:symbols AS text[])) AS s(symbol) "
                    "CROSS JOIN unnest(CAST(:starts AS timestamptz[])) AS t(at) "
                    # Correlated with the bar, so drawn for every bar.
                    "CROSS JOIN LATERAL (SELECT 50 + 50 * random() + 0 * extract(epoch FROM t.at)) "
                    "AS v(p) "
                    f"ORDER BY {order}"
                ),
                {"source": SOURCE, "symbols": names, "starts": list(part.to_pydatetime())},
            )
        columns = ", ".join(f'"{column}"' for column, _ in features)
        conn.exec_driver_sql(
            f"INSERT INTO public.feature_engineered_data ({columns}) "
            f"SELECT {values} FROM public.market_data AS m"
        )
        for table, key in UNIQUE_KEYS.items():
            conn.exec_driver_sql(
                f"ALTER TABLE public.{table} ADD CONSTRAINT {key} "
                'UNIQUE (symbol, "timestamp", source)'
            )
    _vacuum(engine, "public.market_data", "public.feature_engineered_data")


def _vacuum(engine: sa.Engine, *tables: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def _copy_layouts(engine: sa.Engine) -> None:
    """``by_symbol`` and ``by_month``: the plain tables' rows in partitioned tables of the
    same columns and unique key (which must hold the partition key: it does)."""
    months = pd.date_range(
        END - pd.DateOffset(years=YEARS, months=1), END + pd.DateOffset(months=1), freq="MS"
    )
    layouts = {
        "by_symbol": ("HASH (symbol)", ["market_data"]),
        "by_month": ('RANGE ("timestamp")', ["market_data", "feature_engineered_data"]),
    }
    copied = []
    with engine.begin() as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        for layout, (method, tables) in layouts.items():
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {layout} CASCADE; CREATE SCHEMA {layout}")
            for table in tables:
                conn.exec_driver_sql(
                    f"CREATE TABLE {layout}.{table} (LIKE public.{table} INCLUDING DEFAULTS) "
                    f"PARTITION BY {method}"
                )
                if layout == "by_symbol":
                    bounds = [
                        f"FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {r})"
                        for r in range(HASH_PARTITIONS)
                    ]
                else:
                    bounds = [
                        f"FOR VALUES FROM ('{a:%Y-%m-%d}') TO ('{b:%Y-%m-%d}')"
                        for a, b in zip(months[:-1], months[1:], strict=True)
                    ]
                for i, bound in enumerate(bounds):
                    conn.exec_driver_sql(
                        f"CREATE TABLE {layout}.{table}_{i} PARTITION OF {layout}.{table} {bound}"
                    )
                conn.exec_driver_sql(
                    f"INSERT INTO {layout}.{table} SELECT * FROM public.{table} ORDER BY ctid"
                )
                conn.exec_driver_sql(
                    f"ALTER TABLE {layout}.{table} ADD CONSTRAINT {table}_{layout}_key "
                    'UNIQUE (symbol, "timestamp", source)'
                )
                copied.append(f"{layout}.{table}")
    _vacuum(engine, *copied)


def _sizes_line(engine: sa.Engine, symbols: int, bars: int) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid), "
            "pg_indexes_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname IN ('market_data', 'feature_engineered_data') AND c.relkind = 'r' "
            "AND n.nspname = 'public'"
        ).all()
        counted = conn.exec_driver_sql("SELECT count(*) FROM public.market_data").scalar_one()
    sizes = " ".join(
        f"{name}_mb={total / 2**20:.0f} {name}_index_mb={index / 2**20:.0f}"
        for name, total, index in sorted(rows)
    )
    return (
        f"BENCH scenario=table_layout symbols={symbols} bars_per_symbol={bars} "
        f"rows_per_table={counted} {sizes}"
    )


def _statements(layout: str) -> dict[str, str]:
    """The platform's statements (``db/bars.py``, ``db/feature_rows.py``, the checks,
    ``db/model_rows.py``) on ``layout``'s tables."""
    md = "public.market_data" if layout == "plain" else f"{layout}.market_data"
    # Only by_month partitions the features; the other layouts read the plain table.
    fe = f"{'by_month' if layout == 'by_month' else 'public'}.feature_engineered_data"
    return {
        "newest_bar": f'SELECT max("timestamp") FROM {md} WHERE symbol = %(symbol)s '
        "AND source = %(source)s",
        "bar_window": f'SELECT "timestamp", open, high, low, close, volume FROM {md} '
        'WHERE symbol = %(symbol)s AND source = %(source)s AND "timestamp" >= COALESCE(('
        f'SELECT "timestamp" FROM {md} WHERE symbol = %(symbol)s AND source = %(source)s '
        'AND "timestamp" < %(since)s ORDER BY "timestamp" DESC OFFSET 500 LIMIT 1), '
        "'-infinity') ORDER BY \"timestamp\"",
        "feature_tail": f'SELECT "timestamp", close, rsi_14, macd FROM {fe} '
        'WHERE symbol = %(symbol)s AND source = %(source)s ORDER BY "timestamp" DESC LIMIT 24',
        "check_window": "SELECT symbol, count(*), count(*) FILTER (WHERE NOT (low > 0 AND "
        f"low <= LEAST(open, close) AND GREATEST(open, close) <= high)) FROM {md} "
        "WHERE symbol = ANY(%(symbols)s) AND source = %(source)s "
        'AND "timestamp" >= %(check_since)s GROUP BY symbol',
        "hourly_upsert": f'INSERT INTO {md} (symbol, "timestamp", source, open, high, low, '
        "close, adj_close, volume) SELECT s, %(next)s, %(source)s, 10, 11, 9, 10, 10, 5 "
        'FROM unnest(%(all)s) AS s ON CONFLICT (symbol, "timestamp", source) DO UPDATE '
        "SET close = EXCLUDED.close, updated_at = now()",
        "training_read": 'COPY (SELECT f.symbol, extract(epoch FROM f."timestamp"), f.close, '
        "f.rsi_14, f.macd_normalized, f.atr_normalized, f.returns, f.volatility_24 "
        f"FROM {fe} f JOIN public.stock_info s ON s.symbol = f.symbol AND s.active "
        f'JOIN {md} m ON m.symbol = f.symbol AND m."timestamp" = f."timestamp" '
        "AND m.source = f.source "
        'WHERE f.source = %(source)s AND f."timestamp" >= %(year_ago)s AND NOT m.in_progress'
        ") TO STDOUT",
    }


def _params(names: list[str], starts: pd.DatetimeIndex) -> dict:
    """What the statements are asked (the per-symbol ones add ``symbol``)."""
    return {
        "source": SOURCE,
        "since": starts[-5].to_pydatetime(),
        "symbols": names[:500],
        "check_since": (END - CHECK_WINDOW).to_pydatetime(),
        "all": names,
        "next": (starts[-1] + pd.Timedelta(hours=1)).to_pydatetime(),
        "year_ago": (END - pd.DateOffset(years=1)).to_pydatetime(),
    }


class _Discard:
    def write(self, data) -> int:
        return len(data)


def _timings_line(
    engine: sa.Engine, layout: str, names: list[str], starts: pd.DatetimeIndex, round_: int
) -> str:
    statements = _statements(layout)
    step = max(1, len(names) // SAMPLE)
    sample = names[::step][:SAMPLE]
    params = _params(names, starts)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()

        def per_symbol(statement: str) -> Callable[[], None]:
            def run() -> None:
                for symbol in sample:
                    cursor.execute(statement, {**params, "symbol": symbol})
                    cursor.fetchall()

            return run

        def once(statement: str) -> Callable[[], None]:
            def run() -> None:
                cursor.execute(statement, params)
                cursor.fetchall()

            return run

        def upsert() -> None:
            cursor.execute(statements["hourly_upsert"], params)
            raw.rollback()

        def training() -> None:
            cursor.copy_expert(
                cursor.mogrify(statements["training_read"], params).decode(), _Discard()
            )

        work = {
            **{name: per_symbol(statements[name]) for name in PER_SYMBOL},
            "check_window": once(statements["check_window"]),
            "hourly_upsert": upsert,
            "training_read": training,
        }
        if layout == "by_symbol":
            # Only market_data is hashed: the features statements would read the plain table.
            del work["feature_tail"], work["training_read"]
        figures = []
        for name, run in work.items():
            seconds = []
            for attempt in range(4 if name != "training_read" else 2):
                started = time.perf_counter()
                run()
                if attempt:  # the first warms the cache
                    seconds.append(time.perf_counter() - started)
            median = statistics.median(seconds)
            unit = (
                f"{median / len(sample) * 1000:.3f}ms_per_symbol"
                if name in PER_SYMBOL
                else f"{median:.2f}s"
            )
            figures.append(f"{name}={unit}")
        raw.rollback()
    finally:
        raw.close()
    return f"BENCH scenario=table_layout round={round_} layout={layout} " + " ".join(figures)


def _plans_line(engine: sa.Engine, names: list[str], starts: pd.DatetimeIndex) -> str:
    """The index (or scan) each statement uses on the platform's own tables."""
    statements = _statements("plain")
    params = {**_params(names, starts), "symbol": names[len(names) // 2]}
    # The training read's query, without the COPY around it.
    statements["training_read"] = (
        statements["training_read"].removeprefix("COPY (").removesuffix(") TO STDOUT")
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        uses = []
        for name in (*PER_SYMBOL, "check_window", "training_read"):
            cursor.execute("EXPLAIN (FORMAT JSON) " + statements[name], params)
            uses.append(f"{name}={'+'.join(sorted(_scans(cursor.fetchone()[0][0]['Plan'])))}")
        raw.rollback()
    finally:
        raw.close()
    return "BENCH scenario=table_layout plans " + " ".join(uses)


def _scans(plan: dict) -> set[str]:
    found = set()
    if "Scan" in plan["Node Type"]:
        target = plan.get("Index Name") or plan.get("Relation Name", "")
        found.add(f"{plan['Node Type'].replace(' ', '_')}:{target}")
    for child in plan.get("Plans", []):
        found |= _scans(child)
    return found
