"""How models are trained, judged and registered (``ModelingResource``)."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from mltrading_assets.defs.resources import env_or
from mltrading_assets.models.training import TrainingSettings
from mltrading_assets.paths import project_home


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


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "modeling": ModelingResource(
                horizon_bars=env_or("MLTRADING_MODEL_HORIZON_BARS", 1),
                history_days=env_or("MLTRADING_MODEL_HISTORY_DAYS", 365),
                algorithm=env_or("MLTRADING_MODEL_ALGORITHM", "lightgbm"),
                promotion_margin=env_or("MLTRADING_MODEL_PROMOTION_MARGIN", 0.002),
                mlflow_tracking_uri=env_or("MLTRADING_MLFLOW_TRACKING_URI", ""),
                home=env_or("MLTRADING_HOME", ""),
            )
        }
    )
