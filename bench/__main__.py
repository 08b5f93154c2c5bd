"""Benchmark: the real Dagster code path (Postgres storage, multiprocess executor, batched
ranged runs) on synthetic bars, and on Yahoo bars through yfinance, in a fresh database.

    python -m bench                      # 1,000 symbols, every scenario
    python -m bench --symbols 100 --baseline
    python -m bench --scenario incremental
    python -m bench --scenario yahoo_refresh --yahoo-latency 0.3
    python -m bench --scenario scheduled_load --symbols 2000   # daemon path, 3 hourly ticks
    python -m bench --scenario training   # a year of 1,000 symbols: both learners
    python -m bench --scenario scale_out  # 1 worker host vs 2 (root: network namespaces)
    python -m bench --scenario table_layout --symbols 10000   # 2 years; partitioned or not

Prints a table and one machine-readable line per scenario:
BENCH scenario=<name> symbols=<N> wall_s=<x> per_symbol_s=<y> rows_per_s=<z>
      peak_connections=<k> peak_rss_mb=<m>      (on one line)
and, for yahoo_refresh, the floor N x latency / max_concurrent_requests, the ratio of the
wall time to it, and the peak requests in flight the local Yahoo-compatible server saw;
for training, one line per learner with its training time, peak RSS and holdout ROC AUC.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

SCENARIOS = ("full_load", "incremental", "features_100", "yahoo_refresh", "training")
# Asked for by name only: it starts `dagster dev` and plays hourly ticks through the daemon.
OPT_IN = ("scheduled_load", "scale_out", "table_layout")
MAX_CONCURRENT_REQUESTS = 5
# Friday 14:00 New York: the full load ends with the 13:30 bar; each later hour adds one bar
# (14:30 and 15:30), and Monday 10:00 adds Monday's first.
BASE_CLOCK = pd.Timestamp("2026-11-20T19:00:00Z")
MONDAY_CLOCK = pd.Timestamp("2026-11-23T15:00:00Z").isoformat()


@dataclass
class Result:
    scenario: str
    symbols: int
    wall_s: float
    rows: int
    peak_connections: int
    peak_rss_mb: float
    mode: str = "dagster"

    def line(self) -> str:
        mode = f" mode={self.mode}" if self.mode != "dagster" else ""
        per_symbol = self.wall_s / self.symbols
        return (
            f"BENCH scenario={self.scenario}{mode} symbols={self.symbols} "
            f"wall_s={self.wall_s:.2f} per_symbol_s={per_symbol:.4f} "
            f"rows_per_s={self.rows / self.wall_s:.0f} "
            f"peak_connections={self.peak_connections} peak_rss_mb={self.peak_rss_mb:.0f}"
        )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--symbols", type=int, default=1000, help="number of symbols (default 1000)"
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS + OPT_IN,
        help="run one scenario (default: all but scheduled_load, scale_out, table_layout)",
    )
    parser.add_argument(
        "--ticks", type=int, default=3, help="scheduled_load: hourly ticks to play (default 3)"
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also time the replaced system (one subprocess per symbol, pandas to_sql)",
    )
    parser.add_argument(
        "--baseline-symbols",
        type=int,
        default=50,
        help="symbols the baseline processes (it is slow; its per-symbol time is compared)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MLTRADING_BENCH_DATABASE_URL", ""),
        help="PostgreSQL server to create the bench database on (default: embedded server)",
    )
    parser.add_argument(
        "--yahoo-latency",
        type=float,
        default=0.3,
        help="yahoo_refresh: seconds the local Yahoo server takes per chart request",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--no-charts",
        action="store_true",
        help="leave the chart out of feature materializations (to measure what it costs)",
    )
    return parser.parse_args(argv)


def clock(hours: int) -> str:
    return (BASE_CLOCK + pd.Timedelta(hours=hours)).isoformat()


CHARTS = True


def resources(as_of: str) -> dict:
    config = {"source": {"config": {"kind": "synthetic", "as_of": as_of}}}
    if not CHARTS:
        config["processing"] = {"config": {"charts": False}}
    return {"resources": config}


def main(argv: list[str] | None = None) -> int:
    global CHARTS
    args = parse(argv)
    if args.scenario == "scale_out":
        # Builds its own hosts, PostgreSQL and broker for each measurement.
        from bench.scale_out import scale_out

        scale_out(args.symbols, args.yahoo_latency, clock, resources)
        return 0
    CHARTS = not args.no_charts
    warnings.filterwarnings("ignore")
    from mltrading_assets.db.embedded import ensure_database, start_embedded_postgres
    from mltrading_assets.paths import PROJECT_ROOT

    server = args.database_url or start_embedded_postgres(
        PROJECT_ROOT / ".mltrading" / "bench-pgdata", database="postgres"
    )
    print_server(server)
    if args.scenario == "table_layout":
        # Fills its own database with rows written in SQL; no Dagster involved.
        from bench.table_layout import table_layout

        table_layout(server, args.symbols, keep=args.keep)
        return 0
    name = f"mltrading_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(server, name)
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    home = tempfile.mkdtemp(prefix="mltrading-bench-")
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home)
    yahoo = start_yahoo(args)
    # Before anything forks: step processes and workers inherit these.
    os.environ.update(MLTRADING_DATABASE_URL=url, DAGSTER_HOME=home, MLTRADING_SOURCE="synthetic")
    if yahoo is not None:
        os.environ.update(yahoo.env())
    try:
        results = run(args, url, name, yahoo, home)
    finally:
        if yahoo is not None:
            yahoo.stop()
        if not args.keep:
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
        shutil.rmtree(home, ignore_errors=True)
    report(results)
    return 0


def print_server(server: str) -> None:
    """The server settings the figures are read against: without autovacuum no table gets
    planner statistics, and Dagster's check-status queries (the UI's asset and partition
    pages) go from milliseconds to seconds; the buffer and WAL settings are shown so runs on
    differently configured servers are not compared unawares (at 10,000 symbols, 4 GB of
    shared buffers instead of 128 MB made no tick faster)."""
    admin = sa.create_engine(server)
    with admin.connect() as conn:
        settings = {
            name: conn.exec_driver_sql(f"SHOW {name}").scalar_one()
            for name in ("autovacuum", "shared_buffers", "max_wal_size", "checkpoint_timeout")
        }
    admin.dispose()
    shown = " ".join(f"{name}={value}" for name, value in settings.items())
    print(f"BENCH scenario=server {shown}", flush=True)


def start_yahoo(args: argparse.Namespace):
    """The local Yahoo-compatible server, with its clock inside the newest closed session."""
    if args.scenario not in (None, "yahoo_refresh"):
        return None
    from mltrading_assets.trading_calendar import nyse_calendar
    from mltrading_assets_tests.fake_yahoo import FakeYahoo

    schedule = nyse_calendar().schedule
    session = schedule[schedule["close"] < pd.Timestamp.now(tz="UTC")].iloc[-1]
    # 13:40 New York: the refresh then adds the 14:30 bar.
    return FakeYahoo(now=session["open"] + pd.Timedelta(hours=4, minutes=10)).start()


def run(
    args: argparse.Namespace, url: str, database: str, yahoo=None, home: str = ""
) -> list[Result]:
    import dagster as dg

    from bench import baseline
    from bench.monitor import Monitor
    from mltrading_assets.db.engine import create_app_engine
    from mltrading_assets.db.migrate import apply_schema
    from mltrading_assets.db.symbols import add_symbols
    from mltrading_assets.lib.launching import materialize
    from mltrading_assets.lib.launching import refresh as pipelined_refresh
    from mltrading_assets.lib.partitions import register_partitions

    engine = create_app_engine(url, pool_size=1, application_name="bench")
    apply_schema(engine)
    symbols = [f"B{i:05d}" for i in range(args.symbols)]
    with engine.begin() as conn:
        add_symbols(conn, symbols)
    wanted = [args.scenario] if args.scenario else list(SCENARIOS)
    results: list[Result] = []

    def rows_in(table: str) -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM public.{table}")).scalar_one()

    def refresh(names: list[str], as_of: str, assets=("market_data", "features")) -> None:
        for asset in assets:
            runs = materialize(
                instance, asset, names, run_config=resources(as_of), log_level="ERROR"
            )
            failed = [r.run_id for r in runs if not r.success]
            if failed:
                raise SystemExit(f"{asset} runs failed: {failed}")

    def refresh_yahoo(names: list[str], config: dict) -> None:
        # As the schedule and sensor run it: features of a range overlap the next bars.
        runs = pipelined_refresh(instance, names, run_config=config, log_level="ERROR")
        failed = [r.run_id for rs in runs.values() for r in rs if not r.success]
        if failed:
            raise SystemExit(f"yahoo refresh runs failed: {failed}")

    def measured(scenario: str, names: list[str], work) -> Result:
        before = rows_in("market_data") + rows_in("feature_engineered_data")
        with Monitor(engine, database) as monitor:
            started = time.perf_counter()
            work()
            wall = time.perf_counter() - started
        written = rows_in("market_data") + rows_in("feature_engineered_data") - before
        result = Result(
            scenario,
            len(names),
            wall,
            max(written, 1),
            monitor.peaks.connections,
            monitor.peaks.rss_mb,
        )
        print(result.line(), flush=True)
        return result

    with dg.DagsterInstance.get() as instance:
        register_partitions(instance, symbols)

        def full_load() -> None:
            refresh(symbols, clock(0))

        if "full_load" in wanted or "scheduled_load" in wanted:
            # The ticks start from it, so its time is shown too (a 10,000-symbol full load
            # has a target of its own).
            results.append(measured("full_load", symbols, full_load))
        else:
            full_load()

        if "incremental" in wanted:
            results.append(measured("incremental", symbols, lambda: refresh(symbols, clock(1))))
            results.append(pure_incremental(url, symbols, clock(2), measured))

        if "features_100" in wanted:
            sample = symbols[:100]
            refresh(sample, MONDAY_CLOCK, assets=("market_data",))
            results.append(
                measured(
                    "features_100", sample, lambda: refresh(sample, MONDAY_CLOCK, ("features",))
                )
            )

        if "scheduled_load" in wanted:
            from bench.scheduled import scheduled_load

            scheduled_load(
                url, database, home, symbols, engine, instance, clock, resources, args.ticks
            )

        if "training" in wanted:
            from bench.training import training

            training(instance, engine, database, home, clock(0))

        if "yahoo_refresh" in wanted and yahoo is not None:
            results.append(
                yahoo_refresh(args, yahoo, instance, engine, home, measured, refresh_yahoo)
            )

    if args.baseline:
        names = [f"X{i:05d}" for i in range(min(args.baseline_symbols, args.symbols))]
        baseline.prepare(engine)
        with Monitor(engine, database) as monitor:
            wall, rows = baseline.run(url, names, clock(0))
        result = Result(
            "full_load",
            len(names),
            wall,
            rows,
            monitor.peaks.connections,
            monitor.peaks.rss_mb,
            mode="baseline",
        )
        print(result.line(), flush=True)
        results.append(result)
    engine.dispose()
    return results


def yahoo_refresh(args, yahoo, instance, engine, home: str, measured, refresh) -> Result:
    """The hourly refresh (both assets) through yfinance against the local server, with a
    service time per chart request: fetching should run at the request limit, not the
    core count, so the wall time approaches N x latency / max_concurrent_requests."""
    from mltrading_assets.db.symbols import add_symbols
    from mltrading_assets.lib.partitions import register_partitions

    names = [f"Y{i:05d}" for i in range(args.symbols)]
    with engine.begin() as conn:
        add_symbols(conn, names)
    register_partitions(instance, names)
    source = {
        "kind": "yahoo",
        "history_days": 60,
        "max_concurrent_requests": MAX_CONCURRENT_REQUESTS,
        "yfinance_cache_dir": os.path.join(home, "yfinance-cache"),
    }
    config = {"resources": {"source": {"config": source}}}
    if not CHARTS:
        config["resources"]["processing"] = {"config": {"charts": False}}
    # Their first load (60 days) is set-up, served without delay and not measured.
    yahoo.latency_s = 0.0
    refresh(names, config)
    yahoo.advance(pd.Timedelta(hours=1))
    yahoo.latency_s = args.yahoo_latency
    yahoo.stats.peak_in_flight = 0
    result = measured("yahoo_refresh", names, lambda: refresh(names, config))
    floor = len(names) * args.yahoo_latency / MAX_CONCURRENT_REQUESTS
    line = (
        f"BENCH scenario=yahoo_refresh_floor symbols={len(names)} "
        f"latency_s={args.yahoo_latency:.3f} max_concurrent_requests={MAX_CONCURRENT_REQUESTS} "
        f"floor_s={floor:.2f} wall_s={result.wall_s:.2f} "
        f"ratio={result.wall_s / floor if floor else float('nan'):.2f} "
        f"peak_in_flight={yahoo.stats.peak_in_flight}"
    )
    print(line, flush=True)
    return result


def pure_incremental(url: str, symbols: list[str], as_of: str, measured) -> Result:
    """The same incremental work without Dagster: the worker pool called directly."""
    from mltrading_assets.workers.bar_task import load_market_data
    from mltrading_assets.workers.feature_task import build_features
    from mltrading_assets.workers.harness import WorkSpec, init_worker
    from mltrading_assets.workers.isolation import default_workers, run_isolated

    spec = WorkSpec(database_url=url, source={"kind": "synthetic", "as_of": as_of}, charts=CHARTS)

    def work() -> None:
        for task in (load_market_data, build_features):
            outcomes = run_isolated(
                task,
                symbols,
                initializer=init_worker,
                initargs=(spec,),
                workers=default_workers(),
                timeout_seconds=300,
            )
            failed = [o.symbol for o in outcomes if not o.ok]
            if failed:
                raise SystemExit(f"pure run failed for {failed[:5]}")

    return measured("incremental_without_dagster", symbols, work)


def report(results: list[Result]) -> None:
    if not results:
        return
    print()
    header = (
        f"{'scenario':<30}{'symbols':>8}{'wall s':>9}{'s/symbol':>10}{'rows/s':>10}"
        f"{'conns':>7}{'RSS MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        name = r.scenario + (f" ({r.mode})" if r.mode != "dagster" else "")
        print(
            f"{name:<30}{r.symbols:>8}{r.wall_s:>9.1f}{r.wall_s / r.symbols:>10.4f}"
            f"{r.rows / r.wall_s:>10.0f}{r.peak_connections:>7}{r.peak_rss_mb:>8.0f}"
        )
    by_name = {(r.scenario, r.mode): r for r in results}
    dagster_inc = by_name.get(("incremental", "dagster"))
    pure = by_name.get(("incremental_without_dagster", "dagster"))
    if dagster_inc and pure:
        overhead = (dagster_inc.wall_s - pure.wall_s) / dagster_inc.symbols
        print(
            f"\nDagster overhead (incremental, total minus pure compute and I/O): "
            f"{overhead:.4f} s/symbol"
        )
        print(
            f"BENCH scenario=dagster_overhead symbols={dagster_inc.symbols} "
            f"per_symbol_s={overhead:.4f}"
        )
    full = by_name.get(("full_load", "dagster"))
    old = by_name.get(("full_load", "baseline"))
    if full and old:
        ratio = (old.wall_s / old.symbols) / (full.wall_s / full.symbols)
        print(f"full load: {ratio:.1f}x faster per symbol than the baseline")
        print(f"BENCH scenario=baseline_ratio symbols={full.symbols} ratio={ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
