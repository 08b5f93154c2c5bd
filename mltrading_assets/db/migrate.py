"""Apply the idempotent DDL in ``sql/`` (schemas first, then tables, in file-name order)."""

from pathlib import Path

import sqlalchemy as sa

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# Serializes concurrent `db init`s (CREATE ... IF NOT EXISTS still races on catalogs).
_INIT_LOCK_ID = 7_301_2026


def sql_files() -> list[Path]:
    files = sorted(SQL_DIR.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no DDL found in {SQL_DIR}; is the repository checked out whole?")
    return files


def apply_schema(engine: sa.Engine) -> list[str]:
    """Create schemas and tables that are missing; returns the files applied."""
    applied = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _INIT_LOCK_ID})
        for path in sql_files():
            conn.exec_driver_sql(path.read_text())
            applied.append(path.name)
    return applied
