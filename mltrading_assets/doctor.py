"""Health report: is the database reachable, and does every table live in its schema?"""

from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from mltrading_assets.db.engine import APP_SCHEMA, DAGSTER_SCHEMA, redacted

APP_TABLES = ("stock_info", "market_data", "feature_engineered_data")
# A few of the tables dagster-postgres creates; enough to tell where its storage went.
DAGSTER_TABLES = ("runs", "event_logs", "jobs", "instance_info")


@dataclass
class Report:
    database: str
    reachable: bool = False
    tables: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check(url: str) -> Report:
    report = Report(database=redacted(url))
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg2"))
    try:
        with engine.connect() as conn:
            report.reachable = True
            rows = conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema IN (:app, :dagster) ORDER BY 1, 2"
                ),
                {"app": APP_SCHEMA, "dagster": DAGSTER_SCHEMA},
            ).all()
            schemas = set(
                conn.execute(
                    sa.text("SELECT nspname FROM pg_namespace WHERE nspname = :s"),
                    {"s": DAGSTER_SCHEMA},
                ).scalars()
            )
    except sa.exc.OperationalError as exc:
        report.problems.append(f"database not reachable: {str(exc.orig).strip()}")
        return report
    finally:
        engine.dispose()
    for schema, table in rows:
        report.tables.setdefault(schema, []).append(table)
    app = set(report.tables.get(APP_SCHEMA, []))
    dagster = set(report.tables.get(DAGSTER_SCHEMA, []))
    if DAGSTER_SCHEMA not in schemas:
        report.problems.append(
            f"schema {DAGSTER_SCHEMA!r} is missing: run `mltrading db init` before Dagster starts"
        )
    for table in APP_TABLES:
        if table not in app:
            report.problems.append(
                f"table {APP_SCHEMA}.{table} is missing: run `mltrading db init`"
            )
    stray = sorted(app & set(DAGSTER_TABLES))
    if stray:
        report.problems.append(
            f"Dagster tables found in {APP_SCHEMA!r} ({', '.join(stray)}): dagster.yaml is not "
            f"using the {DAGSTER_SCHEMA!r} schema"
        )
    if DAGSTER_SCHEMA in schemas and not dagster & set(DAGSTER_TABLES):
        report.problems.append(
            f"no Dagster tables in {DAGSTER_SCHEMA!r}: the Dagster instance did not load "
            "(check dagster.yaml and DAGSTER_HOME)"
        )
    return report
