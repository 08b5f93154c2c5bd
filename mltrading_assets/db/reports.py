"""Read-only queries behind the CLI's reports: the quick start's summary, `mltrading doctor`
(where the tables live, Dagster's migration state, how fresh each active symbol is) and
`mltrading stats`."""

import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.engine import APP_SCHEMA, DAGSTER_SCHEMA
from mltrading_assets.db.tables import APP_TABLES


def symbol_summary(conn: sa.Connection, symbols: list[str]) -> list[sa.Row]:
    """(symbol, bars, last_bar, feature_rows) for each of ``symbols`` that has bars."""
    return conn.execute(
        sa.text(
            "SELECT m.symbol, count(*) AS bars, max(m.timestamp) AS last_bar, "
            "(SELECT count(*) FROM public.feature_engineered_data f "
            " WHERE f.symbol = m.symbol) AS feature_rows "
            "FROM public.market_data m WHERE m.symbol = ANY(:names) "
            "GROUP BY m.symbol ORDER BY m.symbol"
        ),
        {"names": symbols},
    ).all()


def newest_rows(conn: sa.Connection, source: str) -> list[sa.Row]:
    """(symbol, added_at, newest bar, newest feature row) of every active symbol: one index
    probe per symbol and table, whatever the length of its history."""
    return conn.execute(
        sa.text(
            "SELECT s.symbol, s.added_at,"
            ' (SELECT max("timestamp") FROM public.market_data m'
            "   WHERE m.symbol = s.symbol AND m.source = :source) AS bars,"
            ' (SELECT max("timestamp") FROM public.feature_engineered_data f'
            "   WHERE f.symbol = s.symbol AND f.source = :source) AS features"
            " FROM public.stock_info s WHERE s.active ORDER BY s.symbol"
        ),
        {"source": source},
    ).all()


def tables_by_schema(conn: sa.Connection) -> dict[str, list[str]]:
    """The tables of the application's and Dagster's schemas, by schema."""
    rows = conn.execute(
        sa.text(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN (:app, :dagster) ORDER BY 1, 2"
        ),
        {"app": APP_SCHEMA, "dagster": DAGSTER_SCHEMA},
    ).all()
    tables: dict[str, list[str]] = {}
    for schema, table in rows:
        tables.setdefault(schema, []).append(table)
    return tables


def schema_exists(conn: sa.Connection, schema: str) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        ).scalar()
    )


def dagster_migration(conn: sa.Connection) -> str | None:
    """The revision of Dagster's schema in the database."""
    return conn.execute(
        sa.text(f"SELECT version_num FROM {DAGSTER_SCHEMA}.alembic_version")
    ).scalar()


def newest_bars(conn: sa.Connection, source: str) -> list[tuple[str, pd.Timestamp | None]]:
    """(symbol, its newest bar or None) for every active symbol."""
    rows = conn.execute(
        sa.text(
            "SELECT s.symbol, max(m.timestamp) AS newest FROM public.stock_info s "
            "LEFT JOIN public.market_data m ON m.symbol = s.symbol AND m.source = :src "
            "WHERE s.active GROUP BY s.symbol"
        ),
        {"src": source},
    ).all()
    return [(symbol, None if newest is None else pd.Timestamp(newest)) for symbol, newest in rows]


def row_counts(conn: sa.Connection) -> dict[str, int]:
    """Rows in each application table."""
    return {
        table: conn.execute(sa.text(f"SELECT count(*) FROM {APP_SCHEMA}.{table}")).scalar_one()
        for table in APP_TABLES
    }
