"""The symbol universe in ``stock_info``."""

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.db.tables import stock_info


def add_symbols(conn: sa.Connection, symbols: list[str]) -> None:
    """Register symbols as active (re-activating ones that were deactivated)."""
    if not symbols:
        return
    statement = postgresql.insert(stock_info).values([{"symbol": s} for s in symbols])
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["symbol"],
            set_={"active": True, "updated_at": sa.func.now()},
            where=stock_info.c.active.is_(False),
        )
    )


def deactivate_symbols(conn: sa.Connection, symbols: list[str]) -> int:
    """Stop scheduled work for symbols; their stored bars and features stay."""
    result = conn.execute(
        sa.update(stock_info)
        .where(stock_info.c.symbol.in_(symbols), stock_info.c.active)
        .values(active=False, updated_at=sa.func.now())
    )
    return result.rowcount


def active_symbols(conn: sa.Connection) -> list[str]:
    """Active symbols in the order they were added."""
    rows = conn.execute(
        sa.select(stock_info.c.symbol)
        .where(stock_info.c.active)
        .order_by(stock_info.c.added_at, stock_info.c.symbol)
    )
    return [row.symbol for row in rows]


def known_symbols(conn: sa.Connection, symbols: list[str]) -> set[str]:
    """Which of ``symbols`` are in stock_info, active or not."""
    rows = conn.execute(sa.select(stock_info.c.symbol).where(stock_info.c.symbol.in_(symbols)))
    return {row.symbol for row in rows}


def symbols_changed_since(conn: sa.Connection, cursor: str) -> pd.DataFrame:
    """Active symbols added or re-activated after ``cursor`` (ISO time), in order added, with
    the time they changed."""
    rows = conn.execute(
        sa.select(stock_info.c.symbol, stock_info.c.updated_at)
        .where(stock_info.c.active, stock_info.c.updated_at > sa.literal(pd.Timestamp(cursor)))
        .order_by(stock_info.c.added_at, stock_info.c.symbol)
    ).all()
    return pd.DataFrame(rows, columns=["symbol", "updated_at"])
