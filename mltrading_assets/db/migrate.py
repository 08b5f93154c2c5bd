"""Apply the idempotent DDL in ``sql/`` (schemas first, then tables, in file-name order)."""

import os
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


ROLES_SQL = SQL_DIR / "roles" / "least_privilege.sql"
ROLE_PASSWORDS = {
    "mltrading_app": "MLTRADING_APP_ROLE_PASSWORD",
    "mltrading_dagster": "MLTRADING_DAGSTER_ROLE_PASSWORD",
}


class SchemaPrivilegeError(RuntimeError):
    """The connecting role may not create the tables that are missing."""


def _may_change_schema(conn: sa.Connection) -> bool:
    return bool(
        conn.exec_driver_sql(
            "SELECT has_database_privilege(current_database(), 'CREATE') "
            "AND has_schema_privilege('public', 'CREATE')"
        ).scalar_one()
    )


def apply_schema(engine: sa.Engine) -> list[str]:
    """Create schemas and tables that are missing; returns the files applied.

    A least-privilege role (``mltrading_app``) may not run DDL: with the tables in place it
    applies nothing; with tables missing it is told to run ``db init`` as the owner.
    """
    applied = []
    with engine.begin() as conn:
        if not _may_change_schema(conn):
            present = conn.exec_driver_sql(
                "SELECT to_regclass('public.market_data') IS NOT NULL"
            ).scalar_one()
            if present:
                return []
            user = conn.exec_driver_sql("SELECT current_user").scalar_one()
            raise SchemaPrivilegeError(
                f"role {user!r} may not create the tables: run `mltrading db init` as the "
                "database owner first"
            )
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _INIT_LOCK_ID})
        for path in sql_files():
            conn.exec_driver_sql(path.read_text())
            applied.append(path.name)
    return applied


def apply_roles(engine: sa.Engine) -> list[str]:
    """Create the two least-privilege roles and their grants (see ``sql/roles``); a
    password is set only when its environment variable is. Returns the roles."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _INIT_LOCK_ID})
        # The DBAPI cursor without parameters: the script's format('%I') is not a placeholder.
        conn.connection.cursor().execute(ROLES_SQL.read_text())
        for role, variable in ROLE_PASSWORDS.items():
            if os.environ.get(variable):
                # psycopg2 quotes the value client-side; it never reaches a log of ours.
                conn.exec_driver_sql(
                    f"ALTER ROLE {role} PASSWORD %(password)s", {"password": os.environ[variable]}
                )
    return list(ROLE_PASSWORDS)
