"""Dagster storage in its own PostgreSQL schema, from the app's single database URL.

dagster-postgres has no schema setting; a ``search_path`` option on its connections puts all
of Dagster's tables into ``dagster``, and this class derives that URL from
``MLTRADING_DATABASE_URL`` so users configure one setting, not two. ``dagster.yaml`` names it
under ``storage: custom:``.
"""

from dagster import Field, StringSource
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import pg_url_from_config

from mltrading_assets.db.engine import DAGSTER_SCHEMA, dagster_storage_url, one_connection


def ensure_schema(url: str, schema: str) -> None:
    # dagster-postgres fails with InvalidSchemaName if the schema does not exist yet.
    with one_connection(url, begin=True, application_name="mltrading-dagster") as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


class SchemaScopedPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose tables live in ``schema`` (default ``dagster``)."""

    @classmethod
    def config_type(cls):
        return {
            **pg_config(),
            "schema": Field(StringSource, is_required=False, default_value=DAGSTER_SCHEMA),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value
    ) -> "SchemaScopedPostgresStorage":
        schema = config_value.get("schema", DAGSTER_SCHEMA)
        base_url = pg_url_from_config(config_value)
        ensure_schema(base_url, schema)
        storage = cls(
            inst_data=inst_data,
            postgres_url=dagster_storage_url(base_url, schema),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
        )
        # dagster-postgres opens a new connection for every event it writes (~17 ms each
        # here); a run logs one materialization per symbol, so 1,000 symbols paid ~17 s.
        # One kept-open connection per process (what the webserver does) costs ~4 ms.
        storage.event_log_storage.optimize_for_webserver(
            statement_timeout=0, pool_recycle=3600, max_overflow=1
        )
        return storage

    def dispose(self) -> None:
        super().dispose()
        # dagster-postgres expects its engines to hold no connections and never disposes
        # them; the kept-open event-log connection must be closed with the instance.
        self.event_log_storage._engine.dispose()
