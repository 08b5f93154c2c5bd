"""What every per-symbol task runs inside, in its isolated worker process (no Dagster here):
the worker's one connection and source, retries while the database is away, and the
classification of a failure into a ``FailureKind`` the step can act on.

Each worker opens one database connection and builds its source once, in ``init_worker``;
every symbol then runs in its own transaction, so a failure leaves nothing of it written.
The tasks themselves are in ``bar_task`` and ``feature_task``.
"""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
import tenacity

from mltrading_assets.db.engine import create_app_engine, first_line
from mltrading_assets.names import MetadataKeys
from mltrading_assets.sources import (
    BadBarsError,
    BarSource,
    InvalidSymbolError,
    SourceError,
    SymbolNotFoundError,
    TransientSourceError,
    build_source,
)
from mltrading_assets.workers import fault_injection
from mltrading_assets.workers.isolation import FailureKind, SymbolTaskError
from mltrading_assets.workers.lifeline import die_with_parent


@dataclass(frozen=True)
class WorkSpec:
    """Everything a worker needs, picklable: built from the run's resources."""

    database_url: str
    source: dict[str, Any]
    history_days: int = 365
    overlap_days: int = 3
    feature_set: str = "core"
    # Reload the whole history and recompute every feature (the rebuild job).
    full_refresh: bool = False
    # Attach a table of the latest values and a link to the chart to each feature
    # materialization; the chart is drawn where ``charts_url`` points, when it is opened.
    charts: bool = True
    charts_url: str = ""
    # A lost database connection is retried (the symbol from the start, in a new
    # transaction) for this long: a server restart costs retries, not failed symbols.
    database_outage_seconds: float = 60.0


@dataclass
class Worker:
    """One worker process's state: its spec, its one-connection engine and its source."""

    spec: WorkSpec
    engine: sa.Engine
    source: BarSource
    faults: dict[str, str]
    # Bound requests in flight; cross-host slots are taken on the symbol's own connection.
    request_slots: Any = None

    def slots_on(self, conn: sa.Connection) -> AbstractContextManager:
        bind = getattr(self.request_slots, "bind", None)
        return bind(conn) if bind is not None else nullcontext()


# A task body: the work for one symbol, given the worker it runs in.
Body = Callable[[Worker, str], dict[str, Any]]

_worker: Worker | None = None


def init_worker(spec: WorkSpec, request_slots: Any = None) -> None:
    """Open this worker's connection and source. ``request_slots`` (``RequestSlots`` shared
    by the step's workers, or ``SharedRequestSlots`` shared by every host) bound the requests
    a network source has in flight."""
    global _worker
    die_with_parent()
    _worker = Worker(
        spec=spec,
        # No ping before each symbol (a round trip, ~4 % of a bar task's time): run_task
        # retries a symbol from the start when its connection turns out dead.
        engine=create_app_engine(spec.database_url, pool_size=1, pre_ping=False),
        source=build_source(**spec.source, request_slots=request_slots),
        # Empty unless a test asked for faults through the environment.
        faults=fault_injection.faults_from_environment(),
        request_slots=request_slots,
    )


def _state() -> Worker:
    if _worker is None:
        raise RuntimeError("symbol work runs only in a worker started with init_worker")
    return _worker


def classify(symbol: str, exc: Exception) -> SymbolTaskError:
    """The failure of ``symbol`` as a kind the step can act on, with a message for a user."""
    if isinstance(exc, BadBarsError | InvalidSymbolError | SymbolNotFoundError):
        return SymbolTaskError(FailureKind.BAD_INPUT, str(exc))
    if isinstance(exc, TransientSourceError):
        return SymbolTaskError(FailureKind.TRANSIENT, str(exc))
    if isinstance(exc, SourceError):
        return SymbolTaskError(FailureKind.BAD_INPUT, str(exc))
    if isinstance(exc, sa.exc.DBAPIError):
        return SymbolTaskError(
            FailureKind.ERROR, f"{symbol}: database error, nothing written: {first_line(exc)}"
        )
    return SymbolTaskError(FailureKind.ERROR, f"{symbol}: {type(exc).__name__}: {exc}")


def connection_lost(exc: BaseException) -> bool:
    """The server went away (restart, crash, network): the transaction was rolled back."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def run_task(symbol: str, body: Body) -> dict[str, Any]:
    """Run ``body`` for ``symbol`` in this worker: retried from the start while the database
    is away, any failure raised as a classified ``SymbolTaskError``."""
    worker = _state()
    started = time.perf_counter()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(connection_lost),
        stop=tenacity.stop_after_delay(worker.spec.database_outage_seconds),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
        reraise=True,
    )
    if worker.faults:
        body = fault_injection.with_faults(body, worker.faults)
    try:
        details = retrying(body, worker, symbol)
    except SymbolTaskError:
        raise
    except Exception as exc:
        if connection_lost(exc):
            raise SymbolTaskError(
                FailureKind.DATABASE,
                f"{symbol}: database unreachable for {worker.spec.database_outage_seconds:g} s, "
                f"nothing written: {first_line(exc)}",
            ) from None
        raise classify(symbol, exc) from None
    retries = retrying.statistics.get("attempt_number", 1) - 1
    if retries:
        details["database_retries"] = retries
    details[MetadataKeys.DURATION] = round(time.perf_counter() - started, 4)
    return details


def bar_span(index: pd.DatetimeIndex) -> dict[str, Any]:
    """The first and last bar a task handled, as partition metadata."""
    if len(index) == 0:
        return {MetadataKeys.FIRST_BAR: None, MetadataKeys.LAST_BAR: None}
    return {
        MetadataKeys.FIRST_BAR: index[0].isoformat(),
        MetadataKeys.LAST_BAR: index[-1].isoformat(),
    }
