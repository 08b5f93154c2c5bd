"""The symbol universe grows itself: active ``stock_info`` rows become partitions, and new
symbols get their history loaded in one batched run (features follow)."""

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mltrading_assets.db.tables import stock_info
from mltrading_assets.defs.market_data.assets import market_data
from mltrading_assets.defs.market_data.jobs import market_data_job
from mltrading_assets.defs.resources import PostgresResource
from mltrading_assets.defs.symbols.partitions import symbol_partitions
from mltrading_assets.lib.ranged_runs import contiguous_ranges, range_tags

NEW_SYMBOLS_TAG = "mltrading/new_symbols"


def symbols_changed_since(conn: sa.Connection, cursor: str) -> pd.DataFrame:
    """Active symbols added or re-activated after ``cursor`` (ISO time), in order added."""
    rows = conn.execute(
        sa.select(stock_info.c.symbol, stock_info.c.updated_at)
        .where(stock_info.c.active, stock_info.c.updated_at > sa.literal(pd.Timestamp(cursor)))
        .order_by(stock_info.c.added_at, stock_info.c.symbol)
    ).all()
    return pd.DataFrame(rows, columns=["symbol", "updated_at"])


def universe_result(
    instance: dg.DagsterInstance, changed: pd.DataFrame, cursor: str
) -> dg.SensorResult | dg.SkipReason:
    if changed.empty:
        return dg.SkipReason("no symbols added or re-activated")
    symbols = changed["symbol"].tolist()
    new_cursor = pd.Timestamp(changed["updated_at"].max()).isoformat()
    existing = instance.get_dynamic_partitions(symbol_partitions.name)
    registered = set(existing)
    new_partitions = [s for s in symbols if s not in registered]
    # Only symbols without any bars yet need their history loaded.
    loaded = instance.get_materialized_partitions(market_data.key)
    to_load = [s for s in symbols if s not in loaded]
    ordered = existing + new_partitions
    requests = [
        dg.RunRequest(
            run_key=f"history:{new_cursor}:{first}..{last}",
            job_name=market_data_job.name,
            tags={**range_tags(first, last), NEW_SYMBOLS_TAG: "true"},
        )
        for first, last in contiguous_ranges(ordered, to_load)
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [symbol_partitions.build_add_request(new_partitions)] if new_partitions else []
        ),
        cursor=new_cursor,
    )


@dg.sensor(
    job=market_data_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches stock_info: active symbols become partitions, and new ones get their "
        "history loaded (features follow)."
    ),
)
def symbol_universe_sensor(context: dg.SensorEvaluationContext, database: PostgresResource):
    cursor = context.cursor or "1970-01-01T00:00:00+00:00"
    with database.connection() as conn:
        changed = symbols_changed_since(conn, cursor)
    return universe_result(context.instance, changed, cursor)
