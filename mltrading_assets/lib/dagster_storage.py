"""Dagster storage in its own PostgreSQL schema, from the app's single database URL.

dagster-postgres has no schema setting; a ``search_path`` option on its connections puts all
of Dagster's tables into ``dagster``, and this class derives that URL from
``MLTRADING_DATABASE_URL`` so users configure one setting, not two. ``dagster.yaml`` names it
under ``storage: custom:``.
"""

import datetime as dt
import json
import logging
import os
import sys
import weakref
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial

import sqlalchemy as sa
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DynamicPartitionsDefinition,
    Field,
    PartitionsDefinition,
    StringSource,
)
from dagster._core.asset_graph_view.serializable_entity_subset import SerializableEntitySubset
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as Resolved,
)
from dagster._core.storage.asset_check_state import AssetCheckState, _process_run_statuses
from dagster._core.storage.config import pg_config
from dagster._core.storage.dagster_run import FINISHED_STATUSES, RunsFilter
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._core.storage.event_log.base import PlannedMaterializationInfo
from dagster._core.storage.event_log.migration import ASSET_KEY_INDEX_COLS
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.runs.schema import RunTagsTable
from dagster._serdes import ConfigurableClassData, deserialize_value, serialize_value
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, pg_url_from_config, set_pg_statement_timeout
from dagster_shared.record import copy
from sqlalchemy.dialects.postgresql.base import PGDialect

from mltrading_assets.db.engine import (
    DAGSTER_SCHEMA,
    dagster_storage_url,
    first_line,
    one_connection,
)
from mltrading_assets.names import CHECKS_RECORD_FAILURES, RunTags

# Dagster hands the events of a batch (the per-symbol materializations and check
# evaluations lib/batched_events.py logs in batches) to the storage together only
# when this variable is above 0; it is read whenever an event is written. Every process
# that opens this instance (webserver, daemon, run and step workers, the CLI) imports this
# module first, so the default is set here; a value in the environment wins, 0 turns it off.
EVENT_BATCH_SIZE = "100"
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


# Dagster's backfill daemon looks at its backfills every 30 s (1.13: a constant it reads from
# dagster._daemon.controller each time its loop starts). A backfill launched from the UI then
# waited up to 30 s for its first runs and up to 30 s after its last to be marked done: a
# 1,000-symbol backfill with nothing new took 89 s (50 s when the daemon looks every 10 s).
# The daemon process imports that module before it opens the instance, which imports this
# one. Only the backfill loop reads the constant here (the asset daemon too, but no asset of
# ours is auto-materialized). Internals: test_daemon pins both facts.
BACKFILL_INTERVAL_SECONDS = 10


def shorten_backfill_interval() -> None:
    """Set the backfill daemon's interval, in a process that runs the daemon."""
    controller = sys.modules.get("dagster._daemon.controller")
    if controller is not None:
        controller.DEFAULT_DAEMON_INTERVAL_SECONDS = BACKFILL_INTERVAL_SECONDS


shorten_backfill_interval()


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


# The table each dagster-postgres storage looks for before it creates its tables.
_MAIN_TABLES = ("runs", "instance_info", "event_logs", "jobs")


def ensure_schema(url: str, schema: str) -> bool:
    """Create ``schema`` if it is missing; True if Dagster's tables are all in it already.

    dagster-postgres fails with InvalidSchemaName if the schema does not exist yet. Looked up
    first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when it exists, which
    the least-privilege Dagster role does not have. The tables are looked up on the same
    connection: each of the three storages otherwise opens its own to list the schema's
    tables, and the code server builds an instance for every sensor evaluation."""
    with one_connection(url, begin=True, application_name="mltrading-dagster") as conn:
        exists = conn.exec_driver_sql(
            "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s", {"schema": schema}
        ).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            return False
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %(schema)s"
            " AND tablename = ANY(%(tables)s)",
            {"schema": schema, "tables": list(_MAIN_TABLES)},
        ).scalar_one()
        return found == len(_MAIN_TABLES)


class _KeptConnection:
    """A storage that keeps one connection open, pinged before each use, and remembers what
    it learned about the schema.

    dagster-postgres opens a new connection for every statement outside the webserver (its
    engines hold none, "to prevent accumulating connections per DagsterInstance"): ~7 ms of
    PostgreSQL's CPU and ~6 ms of waiting each here. The daemon alone opened ~28 a second,
    busy or idle, and a 1,000-symbol tick ~2,600; most of those statements asked the catalog
    whether a table or column exists (Dagster checks before each run query whether its runs
    table has the columns of a migration, and before each sensor's state whether the
    instigators table exists). Kept open, as the webserver keeps Dagster's (its
    ``optimize_for_webserver``, plus ``pool_pre_ping``), and with what exists remembered once
    it exists (tables and columns are only ever added), each costs one round trip. (The event
    log was the first kept open: a run logs an event per symbol.)

    Without the ping, the first write after a server restart fails on the dead connection
    ("server closed the connection unexpectedly") and fails the run; with it the connection
    is replaced, and dagster-postgres' connect retries (~6 s of backoff) ride out a short
    restart. Dagster internals (1.13.27): test_storage pins the round trips and test_faults
    the restart."""

    postgres_url: str
    _engine: sa.Engine
    _token_provider: object

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
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
        _KEEPING_A_CONNECTION.add(self)
        sa.event.listen(
            self._engine,
            "connect",
            lambda connection, _: set_pg_statement_timeout(connection, statement_timeout),
        )

    def dispose(self) -> None:
        super().dispose()
        # dagster-postgres expects its engines to hold no connection and never disposes
        # them, but the kept-open one does. DagsterInstance.dispose reaches each storage
        # directly (not SchemaScopedPostgresStorage), so it is closed here: the code server
        # builds an instance per sensor evaluation and leaked one connection each.
        self._engine.dispose()
        _forget_dialects()

    def close_kept_connection(self) -> None:
        """Close the kept-open connection; the next statement opens another."""
        self._engine.dispose()

    def _once_true(self, fact: str, probe) -> bool:
        """``probe()``, asked until it is true, then remembered."""
        known: set[str] = self.__dict__.setdefault("_known_facts", set())
        if fact in known:
            return True
        if probe():
            known.add(fact)
            return True
        return False


class KeptConnectionPostgresRunStorage(_KeptConnection, PostgresRunStorage):
    """dagster-postgres' run storage with a kept-open connection (see ``_KeptConnection``)."""

    # DagsterInstance.dispose (1.13.27) disposes the run and event-log storages but not the
    # schedule storage, whose kept connection would then stay open: the run storage closes it.
    schedule_storage: "KeptConnectionPostgresScheduleStorage | None" = None

    def dispose(self) -> None:
        super().dispose()
        if self.schedule_storage is not None:
            self.schedule_storage.dispose()

    def has_run_stats_index_cols(self) -> bool:
        return self._once_true("run_stats", super().has_run_stats_index_cols)

    def has_bulk_actions_selector_cols(self) -> bool:
        return self._once_true("bulk_selector", super().has_bulk_actions_selector_cols)

    def has_backfill_id_column(self) -> bool:
        return self._once_true("backfill_id", super().has_backfill_id_column)

    def has_bulk_action_job_name_column(self) -> bool:
        return self._once_true("bulk_job_name", super().has_bulk_action_job_name_column)

    def has_backfill_tags_table(self) -> bool:
        return self._once_true("backfill_tags", super().has_backfill_tags_table)


class KeptConnectionPostgresScheduleStorage(_KeptConnection, PostgresScheduleStorage):
    """dagster-postgres' schedule storage with a kept-open connection (see
    ``_KeptConnection``): the sensor daemon reads each sensor's state every loop."""

    def _has_instigators_table(self, conn) -> bool:
        return self._once_true("instigators", partial(super()._has_instigators_table, conn))

    def _has_asset_daemon_asset_evaluations_table(self, conn) -> bool:
        return self._once_true(
            "asset_evaluations",
            partial(super()._has_asset_daemon_asset_evaluations_table, conn),
        )

    def has_secondary_index_table(self) -> bool:
        return self._once_true("secondary_indexes", super().has_secondary_index_table)

    def has_built_index(self, migration_name: str) -> bool:
        return self._once_true(
            f"index {migration_name}", partial(super().has_built_index, migration_name)
        )


class BatchingPostgresEventLogStorage(_KeptConnection, PostgresEventLogStorage):
    """dagster-postgres' event log with a kept-open connection: a run plans its symbols in
    one event per asset, writes its check evaluations in batches, and keeps one symbol in
    each planned check execution; a check's status per symbol is computed with sets. Each
    method says why.
    """

    def has_table(self, table_name: str) -> bool:
        # Asked before many reads and writes (whether a migration's table exists).
        return self._once_true(f"table {table_name}", partial(super().has_table, table_name))

    def _has_asset_key_col_on_connection(self, conn, column_name: str) -> bool:
        # Asked before each read of asset records and of the status cache (the UI's pages).
        return self._once_true(
            f"asset_keys.{column_name}",
            partial(super()._has_asset_key_col_on_connection, conn, column_name),
        )

    def get_asset_check_state(
        self, keys: Sequence[tuple[AssetCheckKey, PartitionsDefinition | None]]
    ) -> Mapping[AssetCheckKey, AssetCheckState]:
        """Each check's status per partition, which every page showing a check recomputes
        (the asset, its partitions, a run).

        Dagster 1.13.27 (``bulk_update_asset_check_state``) goes through the partitions one at
        a time: it asks the database whether each is still a partition, and adds each to its
        status's set by copying the set, so the work grows with the square of the symbols
        (about half of the webserver's CPU while the UI's pages loaded at 10,000 symbols).
        For checks of a named dynamic partitioning (the symbols) the same statuses are
        computed here with one read of the partitions and plain sets; the rest is left to
        Dagster.
        Internals: test_storage compares the two."""
        ours, theirs = [], []
        for key, definition in keys:
            named = isinstance(definition, DynamicPartitionsDefinition) and definition.name
            (ours if named else theirs).append((key, definition))
        states = dict(super().get_asset_check_state(theirs)) if theirs else {}
        if ours:
            states.update(self._check_states(ours))
        return states

    def _check_states(
        self, keys: list[tuple[AssetCheckKey, DynamicPartitionsDefinition]]
    ) -> dict[AssetCheckKey, AssetCheckState]:
        infos = defaultdict(list)
        for info in self.get_asset_check_partition_info([key for key, _ in keys]):
            infos[info.check_key].append(info)
        planned = AssetCheckExecutionRecordStatus.PLANNED
        planned_runs = {
            info.latest_planned_run_id
            for found in infos.values()
            for info in found
            if info.latest_execution_status == planned
        }
        finished = (
            {
                run.run_id: run.status
                for run in self._instance.get_runs(
                    filters=RunsFilter(run_ids=list(planned_runs), statuses=FINISHED_STATUSES)
                )
            }
            if planned_runs
            else {}
        )
        partitions: dict[str, frozenset[str]] = {}
        states = {}
        for key, definition in keys:
            if definition.name not in partitions:
                partitions[definition.name] = frozenset(
                    self.get_dynamic_partitions(definition.name)
                )
            valid = partitions[definition.name]
            by_status: dict[Resolved, set[str]] = {status: set() for status in Resolved}
            in_progress: dict[str, set[str]] = defaultdict(set)
            latest = 0
            # As _process_partition_records does, one partition after another.
            for info in infos[key]:
                latest = max(
                    latest,
                    info.latest_check_event_storage_id,
                    info.latest_materialization_storage_id or 0,
                )
                partition = info.partition_key
                if partition is None or partition not in valid:
                    continue
                status = info.latest_execution_status
                if status == planned:
                    by_status[Resolved.IN_PROGRESS].add(partition)
                    in_progress[info.latest_planned_run_id].add(partition)
                elif not info.is_current:  # materialized since: no status
                    for members in by_status.values():
                        members.discard(partition)
                elif status == AssetCheckExecutionRecordStatus.SUCCEEDED:
                    by_status[Resolved.SUCCEEDED].add(partition)
                elif status == AssetCheckExecutionRecordStatus.FAILED:
                    by_status[Resolved.FAILED].add(partition)
            empty = definition.empty_subset()

            def subset(members: set[str], key=key, empty=empty) -> SerializableEntitySubset:
                return SerializableEntitySubset(key=key, value=empty.with_partition_keys(members))

            subsets, runs = _process_run_statuses(
                key,
                definition,
                {status: subset(members) for status, members in by_status.items()},
                {run_id: subset(members) for run_id, members in in_progress.items()},
                finished,
            )
            states[key] = AssetCheckState(
                latest_storage_id=latest, subsets=subsets, in_progress_runs=runs
            )
        return states

    def _look_up_asset_key_columns(self) -> None:
        # dagster-postgres asks (once per storage, then cached) whether the asset-key table
        # has its index columns from inside the transaction that writes an asset event, so
        # the lookup opened a second connection beside the kept one: each step held three
        # for a moment, one more than its two storages keep. Asked first, on the kept one.
        self.has_secondary_index(ASSET_KEY_INDEX_COLS)

    def store_event(self, event: EventLogEntry) -> None:
        if event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS:
            self._look_up_asset_key_columns()
        super().store_event(event)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if events and all(_is_run_check_evaluation(event) for event in events):
            self._store_check_evaluations(events)
            return
        self._look_up_asset_key_columns()
        super().store_event_batch(events)

    # A run over N symbols planned its materializations as N events per asset (~0.8 KB each,
    # too small for PostgreSQL to compress): 1.6 KB of every symbol's 3.8 KB of event log a
    # tick, as stored. Dagster can plan a run's partitions as one event per asset naming the
    # subset instead, but then (1.13.27) reads a partition's last planned run only from the
    # per-partition events: a failed run would no longer mark its symbols failed, and a
    # partition page would not name its latest run. The two reads below also look in the
    # subset events. Dagster internals: test_a_failing_symbol_fails_alone pins them.
    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return True

    def get_latest_asset_partition_materialization_attempts_without_materializations(
        self, asset_key: AssetKey, after_storage_id: int | None = None
    ) -> Mapping[str, tuple[str, int]]:
        """Each partition whose latest planned run has not materialized it: (run id, storage
        id of the planned event). What Dagster's status cache marks failed or in progress."""
        attempts = dict(
            super().get_latest_asset_partition_materialization_attempts_without_materializations(
                asset_key, after_storage_id
            )
        )
        planned: dict[str, tuple[str, int]] = {}
        for storage_id, run_id, partitions in self._planned_subsets(asset_key, after_storage_id):
            for partition in partitions:
                if partition not in attempts or attempts[partition][1] < storage_id:
                    planned[partition] = (run_id, storage_id)
        if not planned:
            return attempts
        table = SqlEventLogStorageTable
        query = (
            sa.select(table.c.partition, sa.func.max(table.c.id))
            .where(
                table.c.asset_key == asset_key.to_string(),
                table.c.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION.value,
                table.c.partition.in_(list(planned)),
                table.c.id > min(storage_id for _, storage_id in planned.values()),
            )
            .group_by(table.c.partition)
        )
        with self.index_connection() as conn:
            materialized = dict(conn.execute(query).all())
        for partition, attempt in planned.items():
            if materialized.get(partition, 0) > attempt[1]:
                attempts.pop(partition, None)
            else:
                attempts[partition] = attempt
        return attempts

    def get_latest_planned_materialization_info(
        self, asset_key: AssetKey, partition: str | None = None
    ) -> PlannedMaterializationInfo | None:
        latest = super().get_latest_planned_materialization_info(asset_key, partition)
        if partition is None:
            return latest  # the asset's subset events are among its planned events
        # Newest first, only events whose text names the partition (a JSON string in the
        # serialized subset): a symbol of the hourly runs is in one of the last few.
        table = SqlEventLogStorageTable
        query = (
            self._subset_events_query(asset_key, latest.storage_id if latest else None)
            .where(sa.func.strpos(table.c.event, json.dumps(partition)) > 0)
            .order_by(table.c.id.desc())
            .limit(1)
        )
        with self.index_connection() as conn:
            while row := conn.execute(query).first():
                storage_id, run_id, event = row
                if partition in _planned_partitions(event):
                    return PlannedMaterializationInfo(storage_id=storage_id, run_id=run_id)
                query = query.where(table.c.id < storage_id)
        return latest

    def _subset_events_query(self, asset_key: AssetKey, after_storage_id: int | None):
        table = SqlEventLogStorageTable
        query = sa.select(table.c.id, table.c.run_id, table.c.event).where(
            table.c.asset_key == asset_key.to_string(),
            table.c.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
            table.c.partition.is_(None),
        )
        if after_storage_id is not None:
            query = query.where(table.c.id > after_storage_id)
        # Events from before the asset was wiped are forgotten, as Dagster's own reads
        # forget them: a wiped symbol whose last run failed is missing, not failed (Dagster
        # internals, pinned by test_a_failing_symbol_fails_alone with the reads above).
        return self._add_assets_wipe_filter_to_query(
            query, self._get_assets_details([asset_key]), [asset_key]
        )

    def _planned_subsets(
        self, asset_key: AssetKey, after_storage_id: int | None
    ) -> list[tuple[int, str, set[str]]]:
        """(storage id, run id, partitions) of each subset event of ``asset_key``, oldest first."""
        query = self._subset_events_query(asset_key, after_storage_id).order_by(
            SqlEventLogStorageTable.c.id
        )
        with self.index_connection() as conn:
            rows = conn.execute(query).all()
        return [
            (storage_id, run_id, _planned_partitions(event)) for storage_id, run_id, event in rows
        ]

    def _store_asset_check_evaluation_planned(
        self, event: EventLogEntry, event_id: int | None
    ) -> None:
        """One planned execution per partition of the run, each with the planned event
        narrowed to its own partition.

        Dagster 1.13.27 stores the run's whole planned event, every partition of the run
        listed in it, in each partition's row: ~10 bytes per partition per row, so a run's
        rows grow with the square of its size, and so does the CPU spent serializing them
        where the run is created (webserver, daemon, CLI). Creating a 1,250-symbol quality
        run wrote 128 MB of events in 11-12 s (a launch through the webserver once outlasted
        the GraphQL client's 30 s); narrowed, 9 MB in 1.4-1.6 s. The event log keeps the whole
        event; a row's event is read only for its run and step. Mirrors
        ``SqlEventLogStorage._store_asset_check_evaluation_planned`` otherwise;
        test_a_planned_check_row_holds_its_own_partition pins it."""
        dagster_event = event.get_dagster_event()
        planned = dagster_event.asset_check_planned_data
        subset = planned.partitions_subset
        if subset is None:
            super()._store_asset_check_evaluation_planned(event, event_id)
            return
        if self._records_failures_only(event.run_id):
            # Its passing symbols get no evaluation: planned, they would end "Skipped" and
            # hide the status of their last evaluation. A failure is inserted unplanned.
            return
        timestamp = self._event_insert_timestamp(event)

        def own(partition: str) -> str:
            narrowed = copy(
                planned, partitions_subset=subset.empty_subset().with_partition_keys([partition])
            )
            return serialize_value(
                event._replace(dagster_event=dagster_event._replace(event_specific_data=narrowed))
            )

        rows = [
            {
                "asset_key": planned.asset_key.to_string(),
                "check_name": planned.check_name,
                "partition": partition,
                "run_id": event.run_id,
                "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
                "evaluation_event": own(partition),
                "evaluation_event_timestamp": timestamp,
                "evaluation_event_storage_id": event_id,
            }
            for partition in subset.get_partition_keys()
        ]
        if rows:
            with self.index_connection() as conn:
                conn.execute(AssetCheckExecutionsTable.insert(), rows)

    def _records_failures_only(self, run_id: str) -> bool:
        """Whether ``run_id`` is an hourly checks run that records only failures (its tag,
        read from the run storage's table in the same schema: the run is created, tags and
        all, before Dagster logs what it plans). Dagster 1.13.27's ``run_tags``;
        test_an_hourly_check_run_records_the_failures_and_keeps_each_symbols_last_status
        pins it."""
        with self.index_connection() as conn:
            found = conn.execute(
                sa.select(sa.literal(1)).where(
                    RunTagsTable.c.run_id == run_id,
                    RunTagsTable.c.key == RunTags.CHECKS_RECORD,
                    RunTagsTable.c.value == CHECKS_RECORD_FAILURES,
                )
            ).first()
        return found is not None

    def _store_check_evaluations(self, events: Sequence[EventLogEntry]) -> None:
        """A batch of a run's check evaluations (one per symbol partition) in three
        statements: the events in one INSERT, the executions their run planned updated in
        one UPDATE from arrays (a second for any evaluation without a partition), and an
        execution nobody planned inserted. Dagster 1.13.27 writes each evaluation alone
        (INSERT, NOTIFY, UPDATE, each committed, ~5 ms): 80,000 an hour at 10,000 symbols.
        Mirrors ``SqlEventLogStorage._update_asset_check_evaluation`` row for row;
        test_checks_write_their_evaluations_in_batches pins it."""
        # As prepare_insert_event_batch, keeping each serialized event for its execution row.
        event_rows = [self._event_to_row(event) for event in events]
        with self._connect() as conn:
            result = conn.execute(
                SqlEventLogStorageTable.insert()
                .values(event_rows)
                .returning(SqlEventLogStorageTable.c.id)
            )
            event_ids = [int(row[0]) for row in result.fetchall()]
        rows = [
            _execution_row(event, event_row["event"], event_id)
            for event, event_row, event_id in zip(events, event_rows, event_ids, strict=True)
        ]
        done: set[int] = set()
        with self.index_transaction() as conn:
            for partitioned in (True, False):
                group = [row for row in rows if (row["partition"] is not None) == partitioned]
                if group:
                    done |= _update_planned_executions(conn, group, partitioned)
            missing = [row for row in rows if row["evaluation_event_storage_id"] not in done]
            if missing:
                conn.execute(AssetCheckExecutionsTable.insert(), missing)


def _update_planned_executions(conn, rows: list[dict], partitioned: bool) -> set[int]:
    """Point each planned execution of ``rows`` at its evaluation; the evaluations' storage
    ids it updated. The partition is matched by equality, not IS NOT DISTINCT FROM: only
    equality lets PostgreSQL find a row through the (asset, check, run, partition) index;
    the other reads every execution of the asset's check ever recorded for each row (500
    symbols after three runs: ~1.8 M buffer reads, 0.4 s a check; more with every run)."""
    table = AssetCheckExecutionsTable
    # One array a column, unnested by PostgreSQL: a VALUES list of 500 rows is ~4,500 bind
    # parameters for SQLAlchemy to compile and PostgreSQL to parse.
    values = (
        sa.func.unnest(
            *(
                sa.cast(sa.literal([row[name] for row in rows]), sa.ARRAY(table.c[name].type))
                for name in _EXECUTION_COLUMNS
            )
        )
        .table_valued(*_EXECUTION_COLUMNS)
        .render_derived(name="v")
    )
    same_partition = (
        table.c.partition == values.c.partition if partitioned else table.c.partition.is_(None)
    )
    updated = conn.execute(
        table.update()
        .where(
            table.c.asset_key == values.c.asset_key,
            table.c.check_name == values.c.check_name,
            table.c.run_id == values.c.run_id,
            same_partition,
        )
        .values({name: values.c[name] for name in _EXECUTION_COLUMNS[4:]})
        .returning(table.c.evaluation_event_storage_id)
    )
    return {row[0] for row in updated}


# Every storage of this process that keeps a connection open (weakly: one that is gone
# closed its own).
_KEEPING_A_CONNECTION: "weakref.WeakSet[_KeptConnection]" = weakref.WeakSet()


def _forget_dialects() -> None:
    """Let go of the disposed instance's SQLAlchemy dialects. Each Dagster storage builds its
    own engine, and dagster-postgres reflects the ``runs`` table on every run query; the
    PostgreSQL dialect memoizes its reflection statements in method-level ``lru_cache``s
    (SQLAlchemy 2.0: 128 entries each) keyed by the dialect, which keep it, its type memos
    and its compiled statements alive. A process that builds an instance per sensor
    evaluation (the code server) kept the last 128, ~95 KB each: ~12 MB of growth over its
    first few hundred evaluations. Cleared, the next reflection builds its statement again.
    A SQLAlchemy internal: test_storage's disposed-instance test counts the live dialects."""
    for attribute in vars(PGDialect).values():
        clear = getattr(attribute, "cache_clear", None)
        if clear is not None:
            clear()


def close_kept_connections() -> None:
    """Close the kept-open connection of every Dagster instance this process opened. For a
    process that opens instances it cannot dispose itself: dagster-celery's
    step task (1.13.27) builds an instance per step and never disposes it, and something keeps
    those alive, so a worker host held one more PostgreSQL connection after every step it ran
    (a day of ticks would exhaust the server's max_connections)."""
    for storage in list(_KEEPING_A_CONNECTION):
        storage.close_kept_connection()


# What identifies a planned execution, then what its evaluation sets.
_EXECUTION_COLUMNS = (
    "asset_key",
    "check_name",
    "run_id",
    "partition",
    "execution_status",
    "evaluation_event",
    "evaluation_event_timestamp",
    "evaluation_event_storage_id",
    "materialization_event_storage_id",
)


def _planned_partitions(serialized: str) -> set[str]:
    """The partitions a serialized planned event names in its subset (none: unpartitioned)."""
    planned = deserialize_value(serialized, EventLogEntry).get_dagster_event().event_specific_data
    subset = planned.partitions_subset
    return set(subset.get_partition_keys()) if subset is not None else set()


def _is_run_check_evaluation(event: EventLogEntry) -> bool:
    return event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION and bool(
        event.run_id
    )


def _execution_row(event: EventLogEntry, serialized: str, event_id: int) -> dict:
    evaluation = event.get_dagster_event().asset_check_evaluation_data
    target = evaluation.target_materialization_data
    return {
        "asset_key": evaluation.asset_key.to_string(),
        "check_name": evaluation.check_name,
        "run_id": event.run_id,
        "partition": evaluation.partition,
        "execution_status": (
            AssetCheckExecutionRecordStatus.SUCCEEDED.value
            if evaluation.passed
            else AssetCheckExecutionRecordStatus.FAILED.value
        ),
        "evaluation_event": serialized,
        # UTC without a time zone, as Dagster stores it.
        "evaluation_event_timestamp": dt.datetime.fromtimestamp(event.timestamp, dt.UTC).replace(
            tzinfo=None
        ),
        "evaluation_event_storage_id": event_id,
        "materialization_event_storage_id": target.storage_id if target else None,
    }


class SchemaScopedPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose tables live in ``schema`` (default ``dagster``), with
    the batching event log above, and each storage keeping one connection open."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        # DagsterPostgresStorage.__init__, with our storage classes in place of its own.
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = KeptConnectionPostgresRunStorage(postgres_url, should_autocreate_tables)
        self._event_log_storage = BatchingPostgresEventLogStorage(
            postgres_url, should_autocreate_tables
        )
        self._schedule_storage = KeptConnectionPostgresScheduleStorage(
            postgres_url, should_autocreate_tables
        )
        self._run_storage.schedule_storage = self._schedule_storage
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
        tables_exist = ensure_schema(base_url, schema)
        storage = cls(
            inst_data=inst_data,
            postgres_url=dagster_storage_url(base_url, schema),
            # Each storage would list the schema's tables again, on a connection of its own.
            should_autocreate_tables=(
                config_value.get("should_autocreate_tables", True) and not tables_exist
            ),
        )
        # One kept-open connection per storage and process, as the webserver keeps them. A
        # statement beside the kept connection (another thread of the daemon, say) opens one
        # more for its duration rather than wait for it.
        for kept in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            kept.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)
        return storage
