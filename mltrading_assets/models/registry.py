"""The model registry: MLflow, with the aliases ``champion`` (the live model) and
``challenger`` (the newest candidate).

Its backend store is the project's PostgreSQL in schema ``mlflow`` (MLflow's Alembic tables
kept apart from Dagster's), reached through a ``search_path`` connection option; artifacts
are files under ``MLTRADING_HOME``.
"""

import dataclasses
import datetime as dt
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mltrading_assets.db.engine import schema_url
from mltrading_assets.names import ModelAliases

# Before mlflow is imported: no usage reporting from our machines, and no pooled connections
# kept by a long-lived process (each registry call is rare; a connection costs ~5 ms).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

# One INFO line per registry call ("Create SQLAlchemy engine…") buried the runs' own logs.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

MODEL_NAME = "mltrading_direction"
EXPERIMENT = "mltrading_direction"
CHAMPION, CHALLENGER = ModelAliases.CHAMPION, ModelAliases.CHALLENGER
SCHEMA = "mlflow"


def tracking_uri_for(database_url: str) -> str:
    """The MLflow backend store in schema ``mlflow`` of the application database."""
    return schema_url(database_url, SCHEMA, f"mlflow pid {os.getpid()}")


def _types_to_trust(model: object) -> list[str]:
    """The classes skops (MLflow's safe format for scikit-learn models) will not load unless
    told: we wrote the file, so the ones this very model needs."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    run_id: str
    created: dt.datetime
    tags: dict[str, str]

    @classmethod
    def of(cls, version: ModelVersion) -> "VersionInfo":
        return cls(
            version=str(version.version),
            aliases=list(version.aliases or []),
            run_id=version.run_id or "",
            created=dt.datetime.fromtimestamp(version.creation_timestamp / 1000, dt.UTC),
            tags=dict(version.tags or {}),
        )


class ModelRegistry:
    def __init__(self, tracking_uri: str, artifact_dir: Path, name: str = MODEL_NAME) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_dir = Path(artifact_dir)
        self.name = name
        # Model loading resolves artifact URIs through the global tracking URI.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        return self.client.create_experiment(
            EXPERIMENT, artifact_location=self.artifact_dir.resolve().as_uri()
        )

    def _ensure_registered_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(
                self.name,
                description="Probability that a symbol's close rises over the next bars "
                "(mltrading-assets).",
            )

    def register_candidate(
        self,
        model: object,
        params: dict[str, object],
        metrics: dict[str, float],
        tags: dict[str, str],
    ) -> VersionInfo:
        """Log a training run with its model and register it as the ``challenger``."""
        import mlflow.sklearn

        run = self.client.create_run(self._experiment_id(), tags={"mltrading.kind": "training"})
        run_id = run.info.run_id
        try:
            for key, value in params.items():
                self.client.log_param(run_id, key, value)
            for key, value in metrics.items():
                self.client.log_metric(run_id, key, value)
            with tempfile.TemporaryDirectory() as folder:
                local = Path(folder) / "model"
                # Requirements written out: inferring them imports the model in a subprocess.
                library = type(model).__module__.split(".")[0]
                requirements = ["scikit-learn"] + (["lightgbm"] if library == "lightgbm" else [])
                mlflow.sklearn.save_model(
                    model,
                    str(local),
                    pip_requirements=requirements,
                    skops_trusted_types=_types_to_trust(model),
                )
                self.client.log_artifacts(run_id, str(local), "model")
            self.client.set_terminated(run_id, "FINISHED")
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self._ensure_registered_model()
        version = self.client.create_model_version(
            self.name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags=tags
        )
        self.client.set_registered_model_alias(self.name, CHALLENGER, version.version)
        return self.version(str(version.version))

    def version(self, version: str) -> VersionInfo:
        return VersionInfo.of(self.client.get_model_version(self.name, version))

    def by_alias(self, alias: str) -> VersionInfo | None:
        try:
            return VersionInfo.of(self.client.get_model_version_by_alias(self.name, alias))
        except MlflowException:
            return None

    def versions(self) -> list[VersionInfo]:
        found = self.client.search_model_versions(f"name = '{self.name}'")
        if not found:
            return []
        # Search results carry no aliases; the registered model has them all.
        aliases = self.client.get_registered_model(self.name).aliases or {}
        infos = []
        for version in found:
            info = VersionInfo.of(version)
            named = sorted(a for a, v in aliases.items() if str(v) == info.version)
            infos.append(dataclasses.replace(info, aliases=named))
        return sorted(infos, key=lambda v: int(v.version))

    def load(self, version: str) -> object:
        import mlflow.sklearn

        source = self.client.get_model_version(self.name, version).source
        return mlflow.sklearn.load_model(source)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)

    def promote(self, version: str, reason: str) -> VersionInfo | None:
        """Make ``version`` the champion; returns the champion it replaced."""
        previous = self.by_alias(CHAMPION)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.client.set_model_version_tag(self.name, version, "promoted_at", stamp)
        self.client.set_model_version_tag(self.name, version, "promotion_reason", reason)
        if previous is not None and previous.version != version:
            self.client.set_model_version_tag(
                self.name, version, "previous_champion", previous.version
            )
        return previous
