"""SQLAlchemy Core view of the tables that ``sql/`` creates (a test keeps the two in step)."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS, INTEGER_COLUMNS

metadata = sa.MetaData(schema="public")

BAR_KEY = ["symbol", "timestamp", "source"]


def _key_columns() -> list[sa.Column]:
    return [
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
    ]


def _audit_columns() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    ]


stock_info = sa.Table(
    "stock_info",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("exchange", sa.Text),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

BAR_VALUE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
market_data = sa.Table(
    "market_data",
    metadata,
    *_key_columns(),
    *[sa.Column(name, sa.Float(53)) for name in BAR_VALUE_COLUMNS],
    *_audit_columns(),
    # Added after the first release: ALTER TABLE puts it last.
    sa.Column("in_progress", sa.Boolean, nullable=False, server_default=sa.false()),
)

FEATURE_BAR_COLUMNS = ["open", "high", "low", "close", "volume"]
FEATURE_META_COLUMNS = ["feature_set", "feature_version"]
feature_engineered_data = sa.Table(
    "feature_engineered_data",
    metadata,
    *_key_columns(),
    *[sa.Column(name, sa.Float(53)) for name in FEATURE_BAR_COLUMNS],
    *[
        sa.Column(name, sa.SmallInteger if name in INTEGER_COLUMNS else sa.Float(53))
        for name in ALL_FEATURE_COLUMNS
    ],
    *[sa.Column(name, sa.Text, nullable=False) for name in FEATURE_META_COLUMNS],
    *_audit_columns(),
)

system_logs = sa.Table(
    "system_logs",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("job_name", sa.Text, nullable=False),
    sa.Column("partitions", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("duration_s", sa.Float(53)),
    sa.Column("error", sa.Text),
    sa.Column("logged_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("notes", sa.Text),
)


corporate_actions = sa.Table(
    "corporate_actions",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("ex_date", sa.Date, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


known_gaps = sa.Table(
    "known_gaps",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("timestamp", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("first_seen", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


model_predictions = sa.Table(
    "model_predictions",
    metadata,
    *_key_columns(),
    sa.Column("probability_up", sa.Float(53), nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("horizon_bars", sa.SmallInteger, nullable=False),
    sa.Column("bar_in_progress", sa.Boolean, nullable=False),
    sa.Column("predicted_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
alert_incidents = sa.Table(
    "alert_incidents",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("subjects", postgresql.JSONB, nullable=False, server_default="{}"),
    sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("notified_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("pending", sa.Text),
    sa.Column("delivered", postgresql.JSONB, nullable=False, server_default="[]"),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

# Every application table, in the order defined here.
APP_TABLES = tuple(table.name for table in metadata.tables.values())
