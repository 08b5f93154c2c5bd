import dagster as dg
from pydantic import Field

from mltrading_assets.isolation import default_workers


class ProcessingResource(dg.ConfigurableResource):
    """How a run processes its symbols: isolated worker processes with bounded resources."""

    workers: int = Field(
        default=0,
        description="worker processes per run, each with one DB connection; 0 = one per core",
    )
    symbol_timeout_seconds: float = Field(
        default=300.0, description="a symbol still running after this fails alone"
    )
    max_symbols_per_worker: int = Field(
        default=200, description="a worker is replaced after this many symbols (bounds memory)"
    )
    start_method: str = Field(
        default="fork",
        description="how workers start: fork (fast) or forkserver (fresh interpreter)",
    )
    charts: bool = Field(
        default=True,
        description="attach a chart and the latest values to each feature materialization",
    )
    feature_set: str = Field(default="core", description="core | extended")
    fault_injection: str = Field(
        default="",
        description="tests only: SYMBOL=raise|hang|kill,... makes those symbols fail on purpose",
    )

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else default_workers()

    def faults(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.fault_injection.split(",") if "=" in item)
        return {symbol.strip(): fault.strip() for symbol, fault in pairs}
