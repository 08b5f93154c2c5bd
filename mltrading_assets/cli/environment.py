"""What every command needs first: the database (the embedded one unless configured), its
schema, Dagster's home and instance, and quiet Dagster warnings.

Imports are made inside the functions: `mltrading --help` must not wait for Dagster,
SQLAlchemy or pandas to load."""

import os
import warnings
from pathlib import Path

import click

from mltrading_assets.paths import PROJECT_ROOT, project_home

APPLICATION_NAME = "mltrading-cli"


def quiet_dagster_warnings() -> None:
    # Dagster's own module for them (internal in 1.13.27; dagster re-exports the same
    # classes, pinned by test_cli): every command sets these filters, and importing all
    # of Dagster for them cost a second before any command could start its work.
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    for category in (BetaWarning, PreviewWarning):
        warnings.filterwarnings("ignore", category=category)


def environment() -> str:
    """Resolve the database (embedded if none is configured) and Dagster's home; the URL."""
    from mltrading_assets.db.embedded import resolve_database_url

    url = resolve_database_url()
    prepare_dagster_home()
    return url


def ready_environment() -> str:
    """``environment()`` with the application schema applied (idempotent)."""
    url = environment()
    init_schema(url)
    return url


def engine(url: str):
    from mltrading_assets.db.engine import create_app_engine

    return create_app_engine(url, pool_size=1, application_name=APPLICATION_NAME)


def connection(url: str, begin: bool = False):
    from mltrading_assets.db.engine import one_connection

    return one_connection(url, begin=begin, application_name=APPLICATION_NAME)


def init_schema(url: str) -> list[str]:
    """Apply the schema; a role that may not is one line, not a traceback."""
    from mltrading_assets.db.migrate import SchemaPrivilegeError, apply_schema

    app_engine = engine(url)
    try:
        return apply_schema(app_engine)
    except SchemaPrivilegeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        app_engine.dispose()


def instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def prepare_dagster_home() -> Path:
    """``DAGSTER_HOME`` for this project: the repository's ``dagster.yaml`` linked into a
    folder of ``.mltrading``, so Dagster's logs and artifacts stay out of the source tree."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = project_home() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(PROJECT_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
