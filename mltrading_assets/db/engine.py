"""Engines and URLs: one ``MLTRADING_DATABASE_URL`` serves the app and Dagster's storage."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

DAGSTER_SCHEMA = "dagster"
APP_SCHEMA = "public"


def _psycopg2(url: str | sa.URL) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(
            f"MLTRADING_DATABASE_URL must be a postgresql:// URL, got {parsed.drivername!r}"
        )
    # SQLAlchemy may pick psycopg 3 for a bare postgresql:// URL; both we and Dagster use psycopg2.
    return parsed.set(drivername="postgresql+psycopg2")


# A peer that vanished without closing (a host whose link was cut) is given up within ~25 s,
# on both sides: the client's libpq and, per session, the server, which then rolls back the
# session's transaction and releases its locks (request slots included). Keepalives cover an
# idle session; the user timeout covers one cut while the server was still sending to it, which
# would otherwise wait out ~15 minutes of retransmissions. The server's own default waits two
# hours before probing.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}
# The server's settings of the same names (libpq's keepalives_* are its tcp_keepalives_*).
SERVER_KEEPALIVES = " ".join(
    f"-c {name if name.startswith('tcp_') else 'tcp_' + name}={value}"
    for name, value in KEEPALIVES.items()
    if name != "keepalives"
)


def create_app_engine(
    url: str, pool_size: int = 5, application_name: str = "mltrading", pre_ping: bool = True
) -> sa.Engine:
    """Engine for the application tables, with a hard bound on its connections. Without
    ``pre_ping``, a connection the server dropped fails its first statement instead of being
    replaced at checkout: for callers that retry on a lost connection anyway."""
    parsed = _psycopg2(url)
    connect_args: dict = {"application_name": application_name, **KEEPALIVES}
    if "options" not in parsed.query:
        connect_args["options"] = SERVER_KEEPALIVES
    return sa.create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        connect_args=connect_args,
    )


@contextmanager
def one_connection(
    url: str, *, begin: bool = False, application_name: str = "mltrading"
) -> Iterator[sa.Connection]:
    """A single connection whose engine is disposed on exit: for schedules, sensors, checks
    and commands that must leave no pooled connection behind."""
    engine = create_app_engine(url, pool_size=1, application_name=application_name)
    try:
        with engine.begin() if begin else engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def schema_url(url: str, schema: str, application_name: str) -> str:
    """The same database with ``schema`` first on the search_path: how Dagster's and MLflow's
    tables (each with its own Alembic version table) stay apart from the application's."""
    parsed = _psycopg2(url).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": application_name}
    )
    return parsed.render_as_string(hide_password=False)


def dagster_storage_url(url: str, schema: str = DAGSTER_SCHEMA) -> str:
    """Dagster's storage in its own schema. Its connections are named after the process that
    holds them (``dagster pid N`` in ``pg_stat_activity``), so a count of connections can say
    whose they are."""
    return schema_url(url, schema, f"dagster pid {os.getpid()}")


def first_line(exc: BaseException) -> str:
    """The first line of a database error: the driver's own message, without SQLAlchemy's
    statement, parameters and link."""
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(exc).__name__])[0]


def redacted(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)
