from contextlib import AbstractContextManager

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from mltrading_assets.db.engine import create_app_engine, one_connection


class PostgresResource(dg.ConfigurableResource):
    """The application database (tables in schema ``public``)."""

    url: str = Field(
        description="SQLAlchemy URL of the PostgreSQL database (MLTRADING_DATABASE_URL)"
    )

    def engine(self, pool_size: int = 2) -> sa.Engine:
        return create_app_engine(self.url, pool_size=pool_size)

    def connection(self, begin: bool = False) -> AbstractContextManager[sa.Connection]:
        """One connection, closed with its engine (``begin``: inside a transaction)."""
        return one_connection(self.url, begin=begin)
