"""Bulk, idempotent writes: COPY into a temporary table, then one INSERT ... ON CONFLICT."""

import io
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.db.tables import BAR_KEY


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    updated: int

    @property
    def written(self) -> int:
        return self.inserted + self.updated


def _csv(frame: pd.DataFrame, integer_columns: set[str]) -> io.StringIO:
    frame = frame.copy()
    for name in integer_columns & set(frame.columns):
        # COPY will not read "1.0" into SMALLINT; nullable Int16 writes "1" and "" for NULL.
        frame[name] = frame[name].round().astype("Int16")
    buffer = io.StringIO()
    frame.to_csv(buffer, header=False, index=False, na_rep="", date_format="%Y-%m-%d %H:%M:%S%z")
    buffer.seek(0)
    return buffer


def copy_upsert(
    conn: sa.Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    *,
    only_changed: bool = True,
    integer_columns: frozenset[str] = frozenset(),
) -> UpsertCounts:
    """Insert or update ``frame``'s rows in ``table`` by the bar key, inside ``conn``'s transaction.

    With ``only_changed`` an existing row is rewritten (and its ``updated_at`` bumped) only
    when one of its values differs, so a rerun over the same data writes nothing.
    """
    if frame.empty:
        return UpsertCounts(0, 0)
    columns = list(frame.columns)
    stage_name = f"stage_{table.name}"
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_name} "
        f"(LIKE {table.schema}.{table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    column_list = ", ".join(f'"{name}"' for name in columns)
    cursor = conn.connection.driver_connection.cursor()
    cursor.copy_expert(
        f"COPY {stage_name} ({column_list}) FROM STDIN WITH (FORMAT csv)",
        _csv(frame, set(integer_columns)),
    )
    stage = sa.table(stage_name, *[sa.column(name) for name in columns])
    values = [name for name in columns if name not in BAR_KEY]
    statement = postgresql.insert(table).from_select(columns, sa.select(*stage.c))
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=BAR_KEY,
        set_={**{name: excluded[name] for name in values}, "updated_at": sa.func.now()},
        where=(
            sa.tuple_(*[table.c[name] for name in values]).is_distinct_from(
                sa.tuple_(*[excluded[name] for name in values])
            )
            if only_changed
            else None
        ),
    ).returning(sa.literal_column("xmax = 0").label("inserted"))
    flags = [row.inserted for row in conn.execute(statement)]
    inserted = sum(flags)
    return UpsertCounts(inserted=inserted, updated=len(flags) - inserted)
