"""``mltrading``: set up the database, manage symbols, run the assets, open the UI."""

import json
import os
import sys
import time
from pathlib import Path

import click

from mltrading_assets.cli import environment as env
from mltrading_assets.cli.alerts import alerts
from mltrading_assets.cli.models import models
from mltrading_assets.cli.worker import worker
from mltrading_assets.lib import process_exit

DEMO_SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA")


def _parse_symbols(values: tuple[str, ...], allow_none: bool = False) -> list[str]:
    from mltrading_assets.sources import InvalidSymbolError, normalize_symbols

    # Commas separate symbols ("AAPL,MSFT"); a space inside one ("BRK B") is a typo to
    # report, not two symbols to register.
    raw = [part.strip() for value in values for part in value.split(",")]
    raw = [part for part in raw if part]
    if not raw and allow_none and not values:
        return []
    if not raw:
        raise click.BadParameter(
            "no symbol given: name at least one, e.g. AAPL or AAPL,MSFT", param_hint="SYMBOLS"
        )
    try:
        return normalize_symbols(raw)
    except InvalidSymbolError as exc:
        raise click.BadParameter(str(exc), param_hint="SYMBOLS") from None


def _unreachable_database(exc: BaseException) -> str | None:
    """The first line of a connection failure anywhere in ``exc``'s chain, else None."""
    import psycopg2
    import sqlalchemy as sa

    from mltrading_assets.db.engine import first_line

    seen = exc
    while seen is not None:
        if isinstance(seen, sa.exc.OperationalError | psycopg2.OperationalError):
            return first_line(seen)
        seen = seen.__cause__ or seen.__context__
    return None


class _Main(click.Group):
    """The command group; a database that cannot be reached is one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            reason = _unreachable_database(exc)
            if reason is None:
                raise
            from mltrading_assets.db.engine import redacted

            url = os.environ.get("MLTRADING_DATABASE_URL")
            where = f" at {redacted(url)}" if url else ""
            raise click.ClickException(
                f"cannot reach the database{where}: {reason} "
                "(is PostgreSQL running? `mltrading doctor` checks the set-up)"
            ) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Hourly market data and technical features in PostgreSQL, orchestrated by Dagster.

    Uses MLTRADING_DATABASE_URL, or an embedded PostgreSQL in .mltrading/ when it is unset.
    """
    process_exit.skip_final_collections()
    env.quiet_dagster_warnings()


# --- database -----------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create the schemas and tables, show the URL, stop the embedded server."""


@db.command("init")
@click.option(
    "--roles",
    is_flag=True,
    help="Also create the least-privilege roles mltrading_app (app tables in public only) "
    "and mltrading_dagster (schema dagster only); run as the database owner. Passwords "
    "from MLTRADING_APP_ROLE_PASSWORD / MLTRADING_DAGSTER_ROLE_PASSWORD when set.",
)
def db_init(roles: bool) -> None:
    """Create schemas `public` (app) and `dagster` and the app tables (idempotent)."""
    url = env.environment()
    applied = env.init_schema(url)
    from mltrading_assets.db.engine import redacted

    click.echo(
        f"database {redacted(url)}: "
        + (f"applied {', '.join(applied)}" if applied else "schema left as it is (not owner)")
    )
    if roles:
        from mltrading_assets.db.migrate import apply_roles

        engine = env.engine(url)
        try:
            names = apply_roles(engine)
        finally:
            engine.dispose()
        click.echo(
            f"roles {', '.join(names)} ready: run with MLTRADING_DATABASE_URL as "
            "mltrading_app and MLTRADING_DAGSTER_DATABASE_URL as mltrading_dagster"
        )


@db.command("url")
def db_url() -> None:
    """Print the database URL in use (for psql or a notebook)."""
    click.echo(env.environment())


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server (its data stays in .mltrading/pgdata)."""
    from mltrading_assets.db.embedded import stop_embedded_postgres

    click.echo("stopped" if stop_embedded_postgres() else "the embedded server was not running")


def _artifact_dir() -> Path:
    from mltrading_assets.lib.resources import ModelingResource

    return ModelingResource(home=os.environ.get("MLTRADING_HOME", "")).folder() / "mlflow-artifacts"


@db.command("backup")
@click.option(
    "--schema",
    "schemas",
    type=click.Choice(["public", "dagster", "mlflow", "all"]),
    multiple=True,
    default=["all"],
    show_default=True,
    help="What to back up: the application's tables (public), Dagster's runs and event log "
    "(dagster), the model registry (mlflow, with the model files); repeatable.",
)
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def db_backup(schemas: tuple[str, ...], folder: Path) -> None:
    """Back up into FOLDER (new or empty): one pg_dump file per schema, custom format, and
    a manifest of the versions that took it."""
    from mltrading_assets.db.backup import BackupError, backup, existing_schemas

    url = env.environment()
    with env.connection(url) as conn:
        present = existing_schemas(conn)
    chosen = present if "all" in schemas else list(dict.fromkeys(schemas))
    try:
        manifest = backup(url, chosen, folder, _artifact_dir())
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    for schema, name in manifest["schemas"].items():
        size = (folder / name).stat().st_size / 1e6
        click.echo(f"{schema}: {folder / name} ({size:.1f} MB)")
    if "model_artifacts" in manifest:
        click.echo(f"model files: {folder / manifest['model_artifacts']['file']}")
    click.echo(f"taken with {manifest['pg_dump']} from PostgreSQL {manifest['server_version']}")


@db.command("restore")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def db_restore(folder: Path) -> None:
    """Restore a backup from FOLDER into the configured database, which must be empty
    (point MLTRADING_DATABASE_URL at a new one)."""
    from mltrading_assets.db.backup import BackupError, restore
    from mltrading_assets.db.engine import redacted

    url = env.environment()
    try:
        manifest = restore(url, folder)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    env.init_schema(url)  # tables added since the backup was taken
    click.echo(
        f"restored {', '.join(manifest['schemas'])} (taken {manifest['taken_at']}) into "
        f"{redacted(url)}"
    )


# --- symbols ------------------------------------------------------------------------------


@main.group()
def symbols() -> None:
    """Manage the symbol universe (stock_info and the `symbols` partitions)."""


def add_symbols(url: str, instance, names: list[str]) -> list[str]:
    """Register symbols in stock_info and as partitions; returns the new partitions."""
    from mltrading_assets.db.symbols import add_symbols as add_rows
    from mltrading_assets.lib.partitions import register_partitions

    with env.connection(url, begin=True) as conn:
        add_rows(conn, names)
    return register_partitions(instance, names)


# Symbols registered per transaction by `symbols add --file`: one line of output each.
ADD_BATCH = 1000


@symbols.command("add")
@click.argument("names", nargs=-1, metavar="[SYMBOLS]...")
@click.option(
    "--file",
    "symbol_file",
    type=click.File("r"),
    help="symbols one per line (or comma-separated; # starts a comment); - for standard input",
)
def symbols_add(names: tuple[str, ...], symbol_file) -> None:
    """Add symbols (e.g. AAPL MSFT BRK-B ^GSPC, or a whole universe with --file). While
    `mltrading ui` (the daemon) runs, their history loads by itself within a minute: no
    backfill needed."""
    parsed = _parse_symbols(names, allow_none=symbol_file is not None)
    if symbol_file is not None:
        parsed = list(dict.fromkeys(parsed + _symbols_in_file(symbol_file)))
    url = env.ready_environment()
    new: list[str] = []
    batches = [parsed[i : i + ADD_BATCH] for i in range(0, len(parsed), ADD_BATCH)]
    with env.instance() as instance:
        for number, batch in enumerate(batches, start=1):
            added = add_symbols(url, instance, batch)
            new += added
            if len(batches) > 1:
                click.echo(
                    f"batch {number}/{len(batches)}: {len(batch)} symbols "
                    f"({batch[0]} … {batch[-1]}), {len(added)} new"
                )
    known = len(parsed) - len(new)
    click.echo(
        f"added {len(new)} symbol(s): {_few(new)}"
        + (f"; {known} already registered" if known else "")
    )
    load = (
        f"mltrading materialize --symbols {','.join(parsed)}"
        if len(parsed) <= 10
        else "mltrading materialize (every active symbol)"
    )
    click.echo(
        "with `mltrading ui` running, symbol_universe_sensor loads their history within a "
        "minute, no backfill needed (it leaves to a UI backfill launched before it any "
        f"symbol that backfill loads); without it: {load}"
    )


def _symbols_in_file(symbol_file) -> list[str]:
    """Every symbol of the file, or an error naming each bad line (up to 10) and nothing
    registered."""
    from mltrading_assets.sources import InvalidSymbolError, normalize_symbols

    name = "standard input" if symbol_file.name == "<stdin>" else symbol_file.name
    found: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(symbol_file, start=1):
        parts = [p.strip() for p in line.split("#", 1)[0].split(",")]
        parts = [p for p in parts if p]
        if number == 1 and [p.lower() for p in parts] == ["symbol"]:
            continue  # a CSV header
        try:
            found += normalize_symbols(parts)
        except InvalidSymbolError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        more = f" (and {len(problems) - 10} more lines)" if len(problems) > 10 else ""
        raise click.ClickException(
            f"{name}: nothing added, fix these lines first{more}:\n  " + "\n  ".join(problems[:10])
        )
    if not found:
        raise click.ClickException(f"{name}: no symbol in it")
    return found


def _few(names: list[str], shown: int = 10) -> str:
    """A long list of names, shortened for one line."""
    if not names:
        return "-"
    more = f" … and {len(names) - shown} more" if len(names) > shown else ""
    return " ".join(names[:shown]) + more


@symbols.command("remove")
@click.argument("names", nargs=-1, required=True, metavar="SYMBOLS...")
def symbols_remove(names: tuple[str, ...]) -> None:
    """Deactivate symbols: scheduled work stops, stored bars and features stay."""
    from mltrading_assets.db.symbols import deactivate_symbols, known_symbols

    parsed = _parse_symbols(names)
    with env.connection(env.environment(), begin=True) as conn:
        unknown = [s for s in parsed if s not in known_symbols(conn, parsed)]
        count = deactivate_symbols(conn, parsed)
    click.echo(f"deactivated {count} symbol(s)")
    if unknown:
        raise click.ClickException(
            f"unknown symbol(s), never added: {' '.join(unknown)} (see `mltrading symbols list`)"
        )


@symbols.command("list")
def symbols_list() -> None:
    """List active symbols."""
    from mltrading_assets.db.symbols import active_symbols

    with env.connection(env.environment()) as conn:
        for name in active_symbols(conn):
            click.echo(name)


# --- running ------------------------------------------------------------------------------


def _report_reaped(reaped) -> None:
    for dead in reaped.dead:
        click.echo(
            f"marked run {dead.run_id} ({dead.job_name}) failed: its process "
            f"(pid {dead.pid}) is gone"
        )
    if reaped.slots_freed_for:
        click.echo(f"freed pool slots held by finished runs: {', '.join(reaped.slots_freed_for)}")


def run_assets(names: list[str], assets: list[str], runs_at_once: int = 1) -> bool:
    """Materialize ``assets`` for ``names`` in batched Dagster runs; True if all succeeded."""
    from mltrading_assets.lib.launching import RunInterrupted, materialize_symbols

    started = time.perf_counter()
    with env.instance() as instance:
        try:
            runs_by_asset = materialize_symbols(
                instance, names, assets, _report_reaped, runs_at_once=runs_at_once
            )
        except RunInterrupted as stopped:
            click.echo(
                f"interrupted: run {stopped.summary.run_id} stopped (symbols in flight rolled "
                "back, the ones done are kept); no further run started",
                err=True,
            )
            raise SystemExit(130) from None
    seconds = time.perf_counter() - started
    ok = True
    for asset, runs in runs_by_asset.items():
        for run in runs:
            state = "ok" if run.success else "FAILED"
            click.echo(f"{asset}: run {run.run_id} {run.first}..{run.last} {state}")
        click.echo(f"{asset}: {len(names)} symbols in {len(runs)} run(s)")
        ok = ok and all(run.success for run in runs)
    click.echo(f"{len(names)} symbols in {seconds:.1f} s")
    return ok


@main.command()
@click.option("--symbols", "symbol_opts", multiple=True, help="Symbols (default: all active).")
@click.option(
    "--asset",
    type=click.Choice(["all", "market_data", "features"]),
    default="all",
    show_default=True,
    help="What to materialize; `all` runs features after the bars are in.",
)
@click.option(
    "--runs-at-once",
    type=click.IntRange(min=1),
    default=None,
    help="ranges of symbols refreshed at once; default 1, or with worker hosts "
    "(MLTRADING_CELERY_BROKER) one per worker serving the bars queue",
)
def materialize(symbol_opts: tuple[str, ...], asset: str, runs_at_once: int | None) -> None:
    """Materialize assets for symbols through Dagster: the multiprocess executor on this
    machine, or worker hosts when MLTRADING_CELERY_BROKER is set."""
    from mltrading_assets.lib import run_processes

    url = env.environment()
    # Ranges at once run in processes forked from a server that loads the definitions:
    # started first, it does so while this command loads its own code and registers symbols.
    run_processes.start_early(runs_at_once)
    env.init_schema(url)
    if symbol_opts:
        names = _parse_symbols(symbol_opts)
        with env.instance() as instance:
            add_symbols(url, instance, names)
    else:
        from mltrading_assets.db.symbols import active_symbols
        from mltrading_assets.lib.partitions import register_partitions

        with env.connection(url) as conn:
            names = active_symbols(conn)
        if not names:
            raise click.UsageError("no active symbols: add some with `mltrading symbols add AAPL`")
        # Symbols inserted into stock_info by hand are not partitions until the universe
        # sensor runs; a run from the terminal must not wait for it.
        with env.instance() as instance:
            register_partitions(instance, names)
    assets = ["market_data", "features"] if asset == "all" else [asset]
    if runs_at_once is None:
        from mltrading_assets.lib import distributed

        runs_at_once = distributed.bar_workers() if distributed.enabled() else 1
    if not run_assets(names, assets, runs_at_once):
        raise SystemExit(1)


@main.command()
@click.option(
    "--symbols",
    "symbol_opts",
    multiple=True,
    default=DEMO_SYMBOLS,
    show_default=True,
    help="Symbols to load.",
)
def demo(symbol_opts: tuple[str, ...]) -> None:
    """Quick start, offline: embedded PostgreSQL (unless configured), synthetic bars, both
    assets materialized through Dagster, and a summary."""
    from mltrading_assets.db.engine import redacted
    from mltrading_assets.db.reports import symbol_summary

    os.environ.setdefault("MLTRADING_SOURCE", "synthetic")
    names = _parse_symbols(symbol_opts)
    url = env.environment()
    click.echo(f"database: {redacted(url)}")
    click.echo(f"schema: {', '.join(env.init_schema(url))}")
    with env.instance() as instance:
        add_symbols(url, instance, names)
    ok = run_assets(names, ["market_data", "features"])
    click.echo("\nsymbol      bars  feature rows  last bar (UTC)")
    with env.connection(url) as conn:
        summary = symbol_summary(conn, names)
    for symbol, bars, last_bar, feature_rows in summary:
        click.echo(f"{symbol:<10}{bars:>6}{feature_rows:>14}  {last_bar:%Y-%m-%d %H:%M}")
    click.echo(
        "\nOpen the Dagster UI with `.venv/bin/mltrading ui` (http://127.0.0.1:3000): "
        "Assets → market_data shows each symbol's partition and run."
    )
    if not ok:
        raise SystemExit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option(
    "--charts-port",
    default=3001,
    show_default=True,
    type=int,
    help="where the feature charts the UI links to are drawn",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="of the webserver and daemon in this terminal (info: every sensor evaluation, ~30 "
    "lines a minute); runs print their INFO summaries whatever this says",
)
def ui(host: str, port: int, charts_port: int, log_level: str) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on this project's database, and the
    chart server its feature partitions link to.

    Ctrl-C or SIGTERM stop it and everything it started within 15 s."""
    from mltrading_assets.cli.chart_server import charts_served
    from mltrading_assets.cli.serve import serve
    from mltrading_assets.paths import PROJECT_ROOT

    url = env.ready_environment()
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    # Run from DAGSTER_HOME: from the repository, Dagster warned that the dagster.yaml there
    # "will not be used", though DAGSTER_HOME links to that very file.
    home = Path(os.environ["DAGSTER_HOME"])
    with charts_served(url, host, charts_port) as charts:
        # Runs started from this UI link to this chart server unless a deployment says
        # otherwise.
        os.environ.setdefault("MLTRADING_CHARTS_URL", _reachable(charts.url, host))
        click.echo(f"Dagster UI on http://{host}:{port} (Ctrl-C to stop)")
        code = serve([*command, "-h", host, "-p", str(port), "--log-level", log_level], home)
    raise SystemExit(code)


def _reachable(url: str, host: str) -> str:
    """``url`` with a wildcard listening address replaced by one a browser can open."""
    return url.replace(f"//{host}:", "//127.0.0.1:") if host in ("0.0.0.0", "::") else url


@main.group()
def charts() -> None:
    """The feature charts the UI links to."""


@charts.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3001, show_default=True, type=int)
def serve_charts(host: str, port: int) -> None:
    """Draw feature charts on request, for a deployment whose UI is not `mltrading ui`
    (point MLTRADING_CHARTS_URL at http://HOST:PORT/charts where the runs execute)."""
    from mltrading_assets.cli.chart_server import ChartServer

    server = ChartServer(env.ready_environment(), host, port)
    click.echo(f"Charts on {server.url}/SYMBOL.png (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--fix",
    is_flag=True,
    help="Mark runs whose process is gone as failed and free pool slots finished runs hold.",
)
def doctor(as_json: bool, fix: bool) -> None:
    """Check database, schemas, Dagster migrations, daemon, dead runs and held pool slots,
    schedules and data freshness.

    Exits 1 on a problem (warnings alone exit 0)."""
    import pandas as pd

    from mltrading_assets.cli import doctor as health
    from mltrading_assets.definitions import defs

    url = env.environment()
    report = health.check(url)
    if report.reachable:
        try:
            with env.instance() as instance:  # loading it creates or migrates Dagster's tables
                if fix:
                    from mltrading_assets.lib.dead_runs import reap_dead_runs

                    reaped = reap_dead_runs(instance)
                    report.fixed = [f"marked run {d.run_id} failed" for d in reaped.dead] + [
                        f"freed the pool slots of run {r}" for r in reaped.slots_freed_for
                    ]
                health.check_dagster(report, url, instance)
                health.check_workers(report)
        except Exception as exc:
            report.problems.insert(
                0, f"Dagster instance failed to load: {type(exc).__name__}: {exc}"
            )
        if not any("missing" in p for p in report.problems):
            source = defs.resources["source"]
            clock = pd.Timestamp.now(tz="UTC")
            health.check_freshness(report, url, clock, _source_name(source))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        click.echo(f"database: {report.database} ({'reachable' if report.reachable else 'DOWN'})")
        for setting, value in report.server.items():
            click.echo(f"server {setting}: {value}")
        for schema, tables in sorted(report.tables.items()):
            click.echo(f"schema {schema}: {len(tables)} tables: {', '.join(tables)}")
        for key, value in report.dagster.items():
            if key != "workers":
                click.echo(f"dagster {key}: {value}")
        for name, queues in sorted(report.dagster.get("workers", {}).items()):
            click.echo(f"worker {name}: queues {', '.join(queues)}")
        if report.freshness:
            f = report.freshness
            click.echo(f"freshness: {f['fresh']} of {f['active_symbols']} active symbols fresh")
        for fixed in report.fixed:
            click.echo(f"fixed: {fixed}")
        for warning in report.warnings:
            click.echo(f"warning: {warning}")
        for problem in report.problems:
            click.echo(f"PROBLEM: {problem}")
        click.echo("ok" if report.ok else "problems found")
    raise SystemExit(0 if report.ok else 1)


def _source_name(resource) -> str:
    """The configured source kind, read through the EnvVar it may be bound to."""
    kind = resource.kind
    return kind.get_value() if hasattr(kind, "get_value") else kind


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(as_json: bool) -> None:
    """Runs of the last day and week (success rate, median and p95 duration), the slowest
    symbols, and rows per table."""
    from mltrading_assets.cli import stats as workflow_stats
    from mltrading_assets.defs.features.assets import feature_engineered_data
    from mltrading_assets.defs.market_data.assets import market_data

    url = env.environment()
    engine = env.engine(url)
    with env.instance() as instance:
        result = workflow_stats.collect(
            instance, engine, [market_data.key, feature_engineered_data.key]
        )
    engine.dispose()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for period in ("last_day", "last_week"):
        r = result[period]
        rate = f"{r['success_rate']:.1%}" if r["success_rate"] is not None else "-"
        click.echo(
            f"{period.replace('_', ' ')}: {r['runs']} runs {r['by_status']}, success {rate}, "
            f"median {r['median_duration_s']} s, p95 {r['p95_duration_s']} s"
        )
    click.echo("slowest symbols (last day):")
    for row in result["slowest_symbols_last_day"]:
        click.echo(f"  {row['symbol']:<10} {row['asset']:<24} {row['duration_s']} s")
    click.echo("rows: " + ", ".join(f"{t} {n}" for t, n in result["rows"].items()))


main.add_command(models)
main.add_command(alerts)
main.add_command(worker)


if __name__ == "__main__":
    main()
