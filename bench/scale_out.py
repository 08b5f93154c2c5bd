"""scale_out: the same work on 1 worker host and on 2, each host pinned to a core of its own
(`taskset`), so a 2-core machine can show what a second host brings. PostgreSQL, the broker
and the runs' orchestrators share those two cores, so this undercounts a real second
machine. Needs root (the hosts are network namespaces; see mltrading_assets_tests/netns_hosts.py).

Prints, per host count, the full load (a year of bars and every feature of N synthetic
symbols, one range per host at a time) and, on 2 hosts, the yahoo refresh with one client
address per host against the local Yahoo-compatible server:
BENCH scenario=scale_out_full_load hosts=<h> symbols=<N> wall_s=<x> peak_connections=<k>
      connection_budget=<hosts x (workers + 3)> at_peak=<host:role=k,...>
BENCH scenario=scale_out_speedup symbols=<N> speedup=<1-host wall / 2-host wall>
BENCH scenario=scale_out_yahoo_refresh hosts=2 symbols=<N> wall_s=<x> floor_s=<N x latency
      / (5 x 2)> ratio=<x> requests_per_symbol=<x> peak_in_flight_per_address=<a:k,...>
"""

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bench.monitor import Monitor

SLOTS = 5
SYMBOLS_PER_RUN = 100


def _materialize(cluster, symbols: list[str], *args: str) -> float:
    started = time.perf_counter()
    done = cluster.cli("materialize", *args, "--symbols", ",".join(symbols))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"materialize failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return wall


def _holder(built) -> Callable[[str], str]:
    """``host:role`` of a connection: the host by its address (the control host has the
    bridge's), the role by its name (Dagster's storage names its ``dagster pid N``)."""
    hosts = {address: f"host{i + 1}" for i, address in enumerate(built.hosts.addresses)}

    def holder(address_and_name: str) -> str:
        address, _, name = address_and_name.partition(" ")
        role = "dagster" if name.startswith("dagster pid") else name or "unnamed"
        return f"{hosts.get(address, 'control')}:{role}"

    return holder


def _at_peak(holders: dict[str, int]) -> str:
    return ",".join(f"{holder}={n}" for holder, n in sorted(holders.items()))


def _full_load(hosts: int, symbols: int) -> float:
    from mltrading_assets_tests.netns_hosts import cluster

    names = [f"S{i:05d}" for i in range(symbols)]
    settings = {"MLTRADING_SOURCE": "synthetic", "MLTRADING_SYMBOLS_PER_RUN": str(SYMBOLS_PER_RUN)}
    with cluster(Path(tempfile.mkdtemp()), hosts, pin_cores=True, env=settings) as built:
        holder = _holder(built)
        with Monitor(built.engine, "cluster", 0.5, holder, by_address=True) as monitor:
            wall = _materialize(built, names)
        # A worker per host (one core each) holds a connection, plus each host's Celery
        # process and its step's Dagster storage, plus the orchestrators on the control host.
        budget = hosts * (1 + 3)
        print(
            f"BENCH scenario=scale_out_full_load hosts={hosts} symbols={symbols} "
            f"wall_s={wall:.2f} peak_connections={monitor.peaks.connections} "
            f"connection_budget={budget} at_peak={_at_peak(monitor.peaks.holders)}",
            flush=True,
        )
    return wall


def _yahoo_refresh(symbols: int, latency: float) -> None:
    from mltrading_assets_tests.netns_hosts import cluster

    names = [f"Y{i:05d}" for i in range(symbols)]
    settings = {
        "MLTRADING_MAX_CONCURRENT_REQUESTS": str(SLOTS),
        "MLTRADING_SYMBOLS_PER_RUN": str(SYMBOLS_PER_RUN),
    }
    with cluster(Path(tempfile.mkdtemp()), 2, pin_cores=True, env=settings) as built:
        yahoo = built.yahoo
        for name in names:
            yahoo.bars(name)  # built before anything is timed
        yahoo.latency_s = 0.0
        _materialize(built, names, "--asset", "market_data")  # the first load: set-up
        yahoo.now = yahoo.now + pd.Timedelta(hours=1)
        yahoo.latency_s = latency
        yahoo.stats.peak_by_address.clear()
        before = sum(yahoo.stats.chart_requests[name] for name in names)
        wall = _materialize(built, names, "--asset", "market_data")
        requests = sum(yahoo.stats.chart_requests[name] for name in names) - before
        floor = symbols * latency / (SLOTS * 2)
        peaks = ",".join(f"{a}:{n}" for a, n in sorted(yahoo.stats.peak_by_address.items()))
        print(
            f"BENCH scenario=scale_out_yahoo_refresh hosts=2 symbols={symbols} "
            f"latency_s={latency:.3f} wall_s={wall:.2f} floor_s={floor:.2f} "
            f"ratio={wall / floor:.2f} requests_per_symbol={requests / symbols:.2f} "
            f"peak_in_flight_per_address={peaks}",
            flush=True,
        )


def scale_out(symbols: int, latency: float) -> None:
    one = _full_load(1, symbols)
    two = _full_load(2, symbols)
    print(
        f"BENCH scenario=scale_out_speedup symbols={symbols} one_host_s={one:.2f} "
        f"two_hosts_s={two:.2f} speedup={one / two:.2f}",
        flush=True,
    )
    _yahoo_refresh(symbols, latency)
