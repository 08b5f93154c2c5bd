"""Faults on purpose, for tests only: a symbol's work raises, hangs, kills its worker or slows
down. Off unless ``MLTRADING_FAULT_INJECTION`` is set, so production resources and the UI
never see it.

The variable holds ``SYMBOL=fault`` pairs separated by commas (``*`` stands for every
symbol), e.g. ``HANG=hang,B=raise``, or the path of a file holding them: a test running
Dagster in its own process sets the path once, before any worker process is started, and
writes the faults of each test into that file.
"""

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENVIRONMENT_VARIABLE = "MLTRADING_FAULT_INJECTION"
FAULTS = ("raise", "hang", "kill", "slow")


def parse(spec: str) -> dict[str, str]:
    """``"A=raise,*=slow"`` as ``{"A": "raise", "*": "slow"}``; an unknown fault is an error."""
    pairs = (item.split("=", 1) for item in spec.replace("\n", ",").split(",") if "=" in item)
    faults = {symbol.strip(): fault.strip() for symbol, fault in pairs}
    unknown = sorted(set(faults.values()) - set(FAULTS))
    if unknown:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: unknown fault(s) {unknown}; known: {FAULTS}")
    return faults


def faults_from_environment() -> dict[str, str]:
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return {}
    if "=" not in value:
        path = Path(value)
        value = path.read_text() if path.exists() else ""
    return parse(value)


def with_faults(
    body: Callable[[Any, str], dict[str, Any]], faults: dict[str, str]
) -> Callable[[Any, str], dict[str, Any]]:
    """``body`` with the fault of its symbol (or of ``*``) acted out first."""

    def faulty(worker: Any, symbol: str) -> dict[str, Any]:
        fault = faults.get(symbol, faults.get("*"))
        if fault == "slow":  # keeps symbols in flight long enough to fault the server under them
            time.sleep(0.5)
        if fault == "raise":
            raise RuntimeError(f"injected failure for {symbol}")
        if fault == "hang":
            time.sleep(3600)
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return body(worker, symbol)

    return faulty
