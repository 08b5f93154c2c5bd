"""The resources' classes: the database, the bar source, how symbols are processed, and how
models are trained. ``defs/resources.py`` and ``defs/models/resources.py`` bind them to the
environment; the CLI builds them too.

Each setting is an ``EnvVar`` when its variable is set (shown as such in Deployment →
Resources), else a default; any of them can be overridden per run in the launchpad.
"""

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from mltrading_assets.db.engine import create_app_engine, one_connection
from mltrading_assets.models.training import TrainingSettings
from mltrading_assets.paths import project_home
from mltrading_assets.sources import SOURCE_CLASSES, BarSource, build_source
from mltrading_assets.workers.hosts import host_name
from mltrading_assets.workers.isolation import default_workers
from mltrading_assets.workers.slots import RequestSlots, SharedRequestSlots


class PostgresResource(dg.ConfigurableResource):
    """The application database (tables in schema ``public``)."""

    url: str = Field(
        description="SQLAlchemy URL of the PostgreSQL database (MLTRADING_DATABASE_URL)"
    )

    def engine(self, pool_size: int = 2) -> sa.Engine:
        return create_app_engine(self.url, pool_size=pool_size)

    def connection(self, begin: bool = False) -> AbstractContextManager[sa.Connection]:
        """One connection, closed with its engine (``begin``: inside a transaction)."""
        return one_connection(self.url, begin=begin)


class BarSourceResource(dg.ConfigurableResource):
    """Where bars come from: ``yahoo`` (yfinance), ``csv`` (a folder) or ``synthetic``."""

    kind: str = Field(default="synthetic", description="yahoo | csv | synthetic (MLTRADING_SOURCE)")
    csv_dir: str = Field(default="", description="folder of <SYMBOL>.csv files, for kind=csv")
    as_of: str = Field(
        default="", description="synthetic only: fixed clock (ISO time) for reproducible runs"
    )
    history_days: int = Field(default=365, description="history loaded for a new symbol")
    max_concurrent_requests: int = Field(
        default=5,
        description=(
            "requests in flight at once (Yahoo's rate limit): the yahoo source fetches with "
            "this many worker processes whatever the core count; one bar step runs at a time "
            "across all runs (pool market_data_source)"
        ),
    )
    request_slots_scope: str = Field(
        default="step",
        description=(
            "what max_concurrent_requests bounds: step (the requests of one bar step, on "
            "one host), host (every bar step of a host: Yahoo limits per client address) or "
            "cluster (every host together); host and cluster share slots through PostgreSQL "
            "(MLTRADING_REQUEST_SLOTS)"
        ),
    )
    overlap_days: int = Field(
        default=3, description="days re-read before the newest stored bar on each refresh"
    )
    request_timeout_seconds: float = Field(
        default=10.0,
        description="yahoo: longest wait for any one HTTP request (yfinance's timeout)",
    )
    retry_attempts: int = Field(
        default=4,
        description="yahoo: attempts per symbol on 429, 5xx, timeouts and connection errors",
    )
    retry_backoff_seconds: float = Field(
        default=1.0,
        description="yahoo: first wait between attempts; doubles each time, with jitter",
    )
    yfinance_cache_dir: str = Field(
        default="",
        description="yahoo: folder of yfinance's time-zone and cookie cache (empty: its own)",
    )

    def source_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "csv_dir": self.csv_dir,
            "as_of": self.as_of,
            "request_timeout_s": self.request_timeout_seconds,
            "retry_attempts": self.retry_attempts,
            "retry_backoff_s": self.retry_backoff_seconds,
            "cache_dir": self.yfinance_cache_dir,
        }

    def build(self) -> BarSource:
        return build_source(**self.source_config())

    @property
    def is_network_bound(self) -> bool:
        return SOURCE_CLASSES[self.kind].network_bound

    def preload(self) -> None:
        """Import the source's client in this (step) process before workers fork from it."""
        SOURCE_CLASSES[self.kind].preload()

    def request_slots(self, database_url: str) -> RequestSlots | SharedRequestSlots | None:
        """The slots this step's requests hold while in flight (None: a local source)."""
        if not self.is_network_bound:
            return None
        if self.request_slots_scope == "step":
            return RequestSlots.create(self.max_concurrent_requests)
        if self.request_slots_scope not in ("host", "cluster"):
            raise ValueError(
                f"request_slots_scope must be step, host or cluster, "
                f"not {self.request_slots_scope!r}"
            )
        scope = f"host:{host_name()}" if self.request_slots_scope == "host" else "cluster"
        return SharedRequestSlots(scope, self.max_concurrent_requests, database_url)

    def fetch_workers(self, cpu_workers: int) -> int:
        """Worker processes for the bar step. Fetching from the network waits on the source,
        not on a core: a network source gets a worker per request slot, one per core to
        parse and write what came back, and one more waiting for the next slot to free up
        (the slots, a shared semaphore, keep requests in flight at
        ``max_concurrent_requests``). With one spare, a host of one core kept 4.2-4.4 of 5
        slots busy on average (a freed slot waited for a worker still parsing); with two,
        4.6-4.7, and three did no better. A local source needs no more workers than
        cores."""
        if self.is_network_bound:
            return self.max_concurrent_requests + cpu_workers + 1
        return min(cpu_workers, self.max_concurrent_requests)


# `mltrading ui` serves charts here unless told otherwise.
DEFAULT_CHARTS_URL = "http://127.0.0.1:3001/charts"


class ProcessingResource(dg.ConfigurableResource):
    """How a run processes its symbols: isolated worker processes with bounded resources."""

    workers: int = Field(
        default=0,
        description="worker processes per run, each with one DB connection; 0 = one per core",
    )
    symbol_timeout_seconds: float = Field(
        default=300.0,
        description="per-symbol budget: a symbol still running after this fails alone "
        "(its worker is stopped and replaced)",
    )
    database_outage_seconds: float = Field(
        default=60.0,
        description="a symbol whose database connection is lost is retried for this long "
        "(a server restart costs retries, not failed symbols); past it the run stops",
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
        description="attach the latest values and a chart link to each feature materialization",
    )
    charts_url: str = Field(
        default=DEFAULT_CHARTS_URL,
        description="where the chart links point: `mltrading ui` draws each chart there when "
        "it is opened (`mltrading charts serve` on a deployment); empty = no chart link",
    )
    feature_set: str = Field(default="core", description="core | extended")
    check_window_days: int = Field(
        default=30,
        description="days of each symbol's bars and features the asset checks judge (what a "
        "refresh may have changed, and holes until they are final); 0 = the whole history, "
        "for an audit",
    )

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else default_workers()


def as_run_config(resource: dg.ConfigurableResource) -> dict[str, Any]:
    """Every setting of ``resource`` as run config, a setting bound to an environment
    variable as ``{"env": NAME}``: a launchpad prefilled with it shows every setting, and a
    run that changes one keeps the others (run config replaces a resource's configuration
    whole, so a partial one would reset the rest to their defaults). Built by Dagster's own
    conversion (internal in dagster 1.13.27; pinned by
    test_the_training_launchpad_holds_every_modeling_setting)."""
    return resource._convert_to_config_dictionary()  # noqa: SLF001


def env_or(name: str, default):
    """``EnvVar(name)`` when the variable is set (shown as such in the UI), else ``default``."""
    if name not in os.environ:
        return default
    if isinstance(default, bool):
        raise TypeError("boolean settings are not read from the environment")
    if isinstance(default, int):
        return dg.EnvVar.int(name)
    if isinstance(default, float):
        return float(os.environ[name])
    return dg.EnvVar(name)


class ModelingResource(dg.ConfigurableResource):
    """The label, the split, the learner, the promotion rule and where models are kept."""

    horizon_bars: int = Field(
        default=1, description="label: does the close rise over the next N bars"
    )
    history_days: int = Field(default=365, description="days of feature rows in the dataset")
    holdout_bars: int = Field(
        default=140,
        description="most recent hours held out to compare candidate and champion (~20 days)",
    )
    embargo_bars: int = Field(
        default=0,
        description="hours dropped before every validation cut; never fewer than the horizon",
    )
    folds: int = Field(default=3, description="walk-forward validation folds")
    algorithm: str = Field(
        default="lightgbm",
        description="lightgbm | hist_gradient_boosting (scikit-learn's)",
    )
    iterations: int = Field(default=200, description="boosting rounds")
    max_leaf_nodes: int = Field(default=31, description="leaves per tree")
    learning_rate: float = Field(default=0.05)
    seed: int = Field(default=7, description="random seed: the same data trains the same model")
    primary_metric: str = Field(
        default="roc_auc", description="what promotion compares: roc_auc | log_loss | accuracy | ic"
    )
    promotion_margin: float = Field(
        default=0.002,
        description="a candidate must beat the champion's primary metric by this much",
    )
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow backend store (MLTRADING_MLFLOW_TRACKING_URI); empty: schema "
        "mlflow of the application database",
    )
    home: str = Field(
        default="", description="folder of the dataset and model artifacts (MLTRADING_HOME)"
    )

    @property
    def embargo(self) -> int:
        return max(self.embargo_bars, self.horizon_bars)

    def folder(self) -> Path:
        return (Path(self.home) if self.home else project_home()) / "models"

    def dataset_path(self) -> Path:
        return self.folder() / "training_dataset.parquet"

    def settings(self) -> TrainingSettings:
        return TrainingSettings(
            algorithm=self.algorithm,
            iterations=self.iterations,
            max_leaf_nodes=self.max_leaf_nodes,
            learning_rate=self.learning_rate,
            seed=self.seed,
        )

    def registry(self, database_url: str):
        """The MLflow registry (imported here: mlflow takes ~1 s to import)."""
        from mltrading_assets.models.registry import ModelRegistry, tracking_uri_for

        uri = self.mlflow_tracking_uri or tracking_uri_for(database_url)
        return ModelRegistry(uri, self.folder() / "mlflow-artifacts")


class AlertsResource(dg.ConfigurableResource):
    """Where alerts go and when something counts as wrong. Off until a destination is set:
    the alert sensors still track incidents and log them in their ticks."""

    slack_webhook_url: str = Field(
        default="",
        description='Slack-compatible incoming webhook, posted {"text": …} '
        "(MLTRADING_ALERT_SLACK_WEBHOOK_URL)",
    )
    webhook_url: str = Field(
        default="",
        description="generic webhook, posted the alert as JSON (MLTRADING_ALERT_WEBHOOK_URL)",
    )
    smtp_host: str = Field(default="", description="mail server (MLTRADING_ALERT_SMTP_HOST)")
    smtp_port: int = Field(default=587, description="MLTRADING_ALERT_SMTP_PORT")
    smtp_security: str = Field(
        default="starttls", description="starttls | none (MLTRADING_ALERT_SMTP_SECURITY)"
    )
    smtp_username: str = Field(
        default="", description="login, if the server wants one (MLTRADING_ALERT_SMTP_USERNAME)"
    )
    smtp_password: str = Field(default="", description="MLTRADING_ALERT_SMTP_PASSWORD")
    email_from: str = Field(
        default="mltrading@localhost", description="sender (MLTRADING_ALERT_EMAIL_FROM)"
    )
    email_to: str = Field(
        default="", description="comma-separated recipients (MLTRADING_ALERT_EMAIL_TO)"
    )
    reminder_hours: float = Field(
        default=4.0,
        description="an incident still open is reminded this long after its last message",
    )
    stale_after_trading_hours: float = Field(
        default=2.0,
        description="during NYSE sessions, a symbol whose newest bar or feature row is older "
        "than this many trading hours is stale",
    )
    slow_factor: float = Field(
        default=1.5, description="a run is slow past this many times its expected duration"
    )
    slow_default_minutes: float = Field(
        default=30.0, description="expected duration of a job with no history yet"
    )
    ui_url: str = Field(
        default="http://127.0.0.1:3000",
        description="the Dagster UI, for links in messages (MLTRADING_UI_URL)",
    )
    as_of: str = Field(default="", description="fixed clock (ISO time), for tests and replays")

    def destinations(self):
        from mltrading_assets.alerts.delivery import Destinations, Smtp

        recipients = tuple(r.strip() for r in self.email_to.split(",") if r.strip())
        smtp = (
            Smtp(
                host=self.smtp_host,
                port=self.smtp_port,
                security=self.smtp_security,
                username=self.smtp_username,
                password=self.smtp_password,
                sender=self.email_from,
                recipients=recipients,
            )
            if self.smtp_host and recipients
            else None
        )
        return Destinations(self.slack_webhook_url, self.webhook_url, smtp)

    def now(self):
        import pandas as pd

        if not self.as_of:
            return pd.Timestamp.now(tz="UTC")
        moment = pd.Timestamp(self.as_of)
        return moment.tz_localize("UTC") if moment.tz is None else moment.tz_convert("UTC")

    def run_link(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"
