"""Dagster storage in its own PostgreSQL schema, from the app's single database URL.

dagster-postgres has no schema setting; a ``search_path`` option on its connections puts all
of Dagster's tables into ``dagster``, and this class derives that URL from
``MLTRADING_DATABASE_URL`` so users configure one setting, not two. ``dagster.yaml`` names it
under ``storage: custom:``.
"""

import logging
import os
from collections.abc import Sequence

import sqlalchemy as sa
from dagster import DagsterEventType, Field, StringSource
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.config import pg_config
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, pg_url_from_config, set_pg_statement_timeout

from mltrading_assets.db.engine import (
    DAGSTER_SCHEMA,
    dagster_storage_url,
    first_line,
    one_connection,
)

# Dagster hands the events of a batch (a run's ASSET_MATERIALIZATION_PLANNED events, the
# per-symbol materializations symbol_batch.py logs in batches) to the storage together only
# when this variable is above 0; it is read whenever an event is written. Every process
# that opens this instance (webserver, daemon, run and step workers, the CLI) imports this
# module first, so the default is set here; a value in the environment wins, 0 turns it off.
EVENT_BATCH_SIZE = "100"
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


class _OneLineRetryWarnings(logging.Filter):
    """dagster-postgres warns on the root logger at each connect retry with the whole
    SQLAlchemy error (3 lines and a link): during an outage that buried the one line that
    matters. Keep the warning, as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Retrying failed database connection") and record.args:
            record.args = (first_line(record.args[0]),)
        return True


logging.getLogger().addFilter(_OneLineRetryWarnings())


# A separate, least-privileged role for Dagster's storage (see sql/roles); unset, Dagster
# uses MLTRADING_DATABASE_URL like the app.
DAGSTER_URL_VARIABLE = "MLTRADING_DAGSTER_DATABASE_URL"


def ensure_schema(url: str, schema: str) -> None:
    # dagster-postgres fails with InvalidSchemaName if the schema does not exist yet. Looked
    # up first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when it exists,
    # which the least-privilege Dagster role does not have.
    with one_connection(url, begin=True, application_name="mltrading-dagster") as conn:
        exists = conn.exec_driver_sql(
            "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s", {"schema": schema}
        ).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


class BatchingPostgresEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log, writing a batch of planned events in one INSERT.

    A run over N symbol partitions logs N ``ASSET_MATERIALIZATION_PLANNED`` events before it
    starts. dagster-postgres batches materializations but writes planned events one by one
    (an INSERT, a NOTIFY and an asset-key UPDATE, each committed: ~3.5 ms), which was 7 s of
    every 1,000-symbol refresh. Here they are one multi-row INSERT and one asset-key update
    per asset (from its last event, as dagster-postgres does for materializations); planned
    events carry no tags to index.
    """

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        """dagster-postgres' kept-open connection, pinged before each use.

        Without the ping, the first write after a server restart fails on the dead
        connection ("server closed the connection unexpectedly") and fails the run; with it
        the connection is replaced, and dagster-postgres' connect retries (~6 s of backoff)
        ride out a short restart. Mirrors ``PostgresEventLogStorage.optimize_for_webserver``
        (1.13.27) plus ``pool_pre_ping``; test_faults pins the behaviour.
        """
        kwargs: dict = {
            "isolation_level": "AUTOCOMMIT",
            "pool_size": 1,
            "pool_recycle": pool_recycle,
            "max_overflow": max_overflow,
            "pool_pre_ping": True,
        }
        existing_options = self._engine.url.query.get("options")
        if existing_options:
            kwargs["connect_args"] = {"options": existing_options}
        self._engine.dispose()
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, **kwargs)
        sa.event.listen(
            self._engine,
            "connect",
            lambda connection, _: set_pg_statement_timeout(connection, statement_timeout),
        )

    def dispose(self) -> None:
        super().dispose()
        # dagster-postgres expects its engines to hold no connection and never disposes
        # them, but the kept-open one above does. DagsterInstance.dispose reaches this
        # storage directly (not SchemaScopedPostgresStorage), so it is closed here: the code
        # server builds an instance per sensor evaluation and leaked one connection each.
        self._engine.dispose()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        planned = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        if not events or any(event.dagster_event_type != planned for event in events):
            super().store_event_batch(events)
            return
        with self._connect() as conn:
            result = conn.execute(
                self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
            )
            event_ids = [int(row[0]) for row in result.fetchall()]
        last_by_asset = {}
        for event, event_id in zip(events, event_ids, strict=True):
            last_by_asset[event.get_dagster_event().asset_key] = (event, event_id)
        with self.index_transaction() as conn:
            for event, event_id in last_by_asset.values():
                self._store_asset_event(conn, event, event_id)


class SchemaScopedPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose tables live in ``schema`` (default ``dagster``), with
    the batching event log above."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        # DagsterPostgresStorage.__init__, with our event log class in place of its own.
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(postgres_url, should_autocreate_tables)
        self._event_log_storage = BatchingPostgresEventLogStorage(
            postgres_url, should_autocreate_tables
        )
        self._schedule_storage = PostgresScheduleStorage(postgres_url, should_autocreate_tables)
        super(DagsterPostgresStorage, self).__init__()

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
        base_url = os.environ.get(DAGSTER_URL_VARIABLE) or pg_url_from_config(config_value)
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
