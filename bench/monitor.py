"""Samples taken while a scenario runs: peak PostgreSQL connections and peak process RSS."""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
import sqlalchemy as sa


@dataclass
class Peaks:
    connections: int = 0
    rss_mb: float = 0.0
    # Whose connections they were at the peak: {holder: count}.
    holders: dict = field(default_factory=dict)


class Monitor:
    """Background sampler of ``pg_stat_activity`` (for one database) and of the RSS of this
    process and all its descendants (Dagster step processes, symbol workers)."""

    def __init__(
        self,
        engine: sa.Engine,
        database: str,
        interval: float = 0.1,
        holder: Callable[[str], str] = lambda name: name,
        by_address: bool = False,
    ) -> None:
        self._holder = holder
        self._by_address = by_address
        self._engine = engine
        self._database = database
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peaks = Peaks()

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        with self._engine.connect() as conn:
            while not self._stop.is_set():
                names = client_connections(conn, self._database, self._by_address)
                conn.rollback()  # pg_stat_activity is a per-transaction snapshot
                if len(names) > self.peaks.connections:
                    self.peaks.connections = len(names)
                    self.peaks.holders = count_by(names, self._holder)
                self.peaks.rss_mb = max(self.peaks.rss_mb, _largest_rss_mb(me))
                self._stop.wait(self._interval)


def client_connections(conn: sa.Connection, database: str, by_address: bool = False) -> list[str]:
    """The application names of ``database``'s client connections, other than ``conn``;
    ``by_address``: each as ``address name`` (hosts of their own each have an address)."""
    name = "host(client_addr) || ' ' || application_name" if by_address else "application_name"
    return list(
        conn.execute(
            sa.text(
                # Client connections only: autovacuum workers show up here too.
                f"SELECT {name} FROM pg_stat_activity WHERE datname = :d "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ),
            {"d": database},
        ).scalars()
    )


def count_by(names: list[str], holder: Callable[[str], str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[holder(name)] = counts.get(holder(name), 0) + 1
    return counts


def _largest_rss_mb(root: psutil.Process) -> float:
    largest = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            largest = max(largest, process.memory_info().rss)
        except psutil.Error:
            continue
    return largest / 2**20
