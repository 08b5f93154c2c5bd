"""Run one function per symbol in a pool of worker processes, each symbol on its own.

A symbol whose work raises, runs past its timeout, or kills its worker process fails alone:
pebble replaces the dead or stuck worker and the other symbols carry on (and where pebble
gives up on the whole pool, a new pool takes the symbols left). Workers are
long-lived (one database connection each, opened by the initializer), so connections are
bounded by the worker count whatever the number of symbols, and each worker is replaced
after ``max_tasks`` symbols so memory cannot creep up over a large batch.
"""

import multiprocessing
import os
import traceback
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pebble import ProcessExpired, ProcessPool

from mltrading_assets.workers import forkservers

# Imported once by the fork server, so each new worker starts with them loaded.
PRELOAD_MODULES = ["mltrading_assets.workers.bar_task", "mltrading_assets.workers.feature_task"]


def _context(start_method: str) -> multiprocessing.context.BaseContext:
    # "fork" starts a worker in milliseconds with everything the step already imported; the
    # step process runs only Dagster's queue-feeder and termination threads, which the
    # workers never touch. "forkserver" (a fresh interpreter importing pandas, TA-Lib and
    # SQLAlchemy) cost ~1.5 s per run.
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # Workers must be this step's children, to die with it.
        forkservers.start_own()
        context.set_forkserver_preload(PRELOAD_MODULES)
    return context


class FailureKind(StrEnum):
    """Why a symbol failed; the step retries only the kinds a retry can cure."""

    BAD_INPUT = "bad_input"  # the source's data or the symbol itself: fails again
    TRANSIENT = "transient"  # the source was rate-limited, down or slow
    TIMEOUT = "timeout"  # past the per-symbol budget; its worker was stopped
    CRASHED = "crashed"  # its worker process died
    DATABASE = "database"  # the database stayed unreachable for the whole outage budget
    ERROR = "error"  # anything else (a database error, a bug)

    @property
    def retryable(self) -> bool:
        return self in (FailureKind.TRANSIENT, FailureKind.TIMEOUT, FailureKind.CRASHED)


@dataclass(frozen=True)
class SymbolOutcome:
    """What happened to one symbol: ``details`` on success, ``error`` and ``kind`` on failure."""

    symbol: str
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    kind: FailureKind | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class SymbolTaskError(Exception):
    """Raised inside a worker with a classified, picklable failure."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message


def default_workers() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0))


# A worker that dies while no symbol is known to be running (killed between two symbols,
# or as it took its next one) makes pebble give up on its whole pool: every symbol not
# done is failed with BrokenProcessPool, and those it had not yet handed to a worker are
# never resolved at all. Those symbols go to a new pool; a worker that cannot even start
# (its initializer fails) breaks every pool, so the number of pools is bounded.
POOL_STARTS = 3


def run_isolated(
    task: Callable[[str], dict[str, Any]],
    symbols: list[str],
    *,
    initializer: Callable[..., None],
    initargs: tuple = (),
    workers: int,
    timeout_seconds: float,
    max_tasks: int = 200,
    start_method: str = "fork",
) -> Iterator[SymbolOutcome]:
    """Yield one outcome per symbol, in completion order.

    Stopped early (the consumer raised, was interrupted, or closed the generator), the pool
    is stopped at once: no further symbol starts, and the workers of the symbols in flight
    are terminated, their transactions rolled back with their connections. The pool's own
    context manager would instead wait for every symbol still queued. A pool pebble gave up
    on hands the symbols it left undone to a new one (at most ``POOL_STARTS`` pools).
    """
    remaining = list(symbols)
    for pools in range(1, POOL_STARTS + 1):
        remaining = yield from _run_pool(
            task,
            remaining,
            initializer=initializer,
            initargs=initargs,
            workers=workers,
            timeout_seconds=timeout_seconds,
            max_tasks=max_tasks,
            start_method=start_method,
            last=pools == POOL_STARTS,
        )
        if not remaining:
            return


def _run_pool(
    task: Callable[[str], dict[str, Any]],
    symbols: list[str],
    *,
    initializer: Callable[..., None],
    initargs: tuple,
    workers: int,
    timeout_seconds: float,
    max_tasks: int,
    start_method: str,
    last: bool,
) -> Generator[SymbolOutcome, None, list[str]]:
    """Yield the outcomes of one pool; return the symbols a broken pool left undone."""
    if not symbols:
        return []
    pool = ProcessPool(
        max_workers=max(1, min(workers, len(symbols))),
        max_tasks=max_tasks,
        initializer=initializer,
        initargs=initargs,
        context=_context(start_method),
    )
    try:
        pending: dict[Any, str] = {}
        unscheduled: list[str] = []
        for i, symbol in enumerate(symbols):
            try:
                pending[pool.schedule(task, args=(symbol,), timeout=timeout_seconds)] = symbol
            except RuntimeError:  # pebble gave up on the pool while it was being filled
                unscheduled = symbols[i:]
                break
        # as_completed arms each future once; wait(FIRST_COMPLETED) re-armed every pending
        # one per completion, quadratic in the run's symbols (~0.6 CPU s a 1,250-symbol step).
        if not unscheduled:
            for future in as_completed(list(pending)):
                if _broke(future):
                    break
                yield _outcome(pending.pop(future), future, timeout_seconds)
            else:
                return []
        # Pebble gave up on the pool: what finished before the break is kept, the rest
        # goes to a new pool.
        for future in [f for f in pending if f.done() and not _broke(f)]:
            yield _outcome(pending.pop(future), future, timeout_seconds)
        pool.stop()
        undone = [*pending.values(), *unscheduled]
        if not last:
            return undone
        for symbol in undone:
            yield SymbolOutcome(
                symbol,
                error=(
                    f"not run: the worker processes of {POOL_STARTS} pools in a row "
                    "died before taking a symbol (does a worker fail as it starts? "
                    "its error is on stderr)"
                ),
                kind=FailureKind.ERROR,
            )
        return []
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.close()
        pool.join()


def _broke(future: Any) -> bool:
    return (
        future.done()
        and not future.cancelled()
        and isinstance(future.exception(), BrokenProcessPool)
    )


def _outcome(symbol: str, future: Any, timeout_seconds: float) -> SymbolOutcome:
    try:
        details = future.result()
    except SymbolTaskError as exc:
        return SymbolOutcome(symbol, error=exc.message, kind=exc.kind)
    except FutureTimeout:
        return SymbolOutcome(
            symbol,
            error=f"timed out after {timeout_seconds:g} s; worker stopped",
            kind=FailureKind.TIMEOUT,
        )
    except ProcessExpired as exc:
        return SymbolOutcome(
            symbol,
            error=f"worker process died (exit code {exc.exitcode})",
            kind=FailureKind.CRASHED,
        )
    except Exception as exc:  # an unexpected bug in the task: report what was raised
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return SymbolOutcome(symbol, error=text, kind=FailureKind.ERROR)
    return SymbolOutcome(symbol, details=details)
