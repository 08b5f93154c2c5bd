"""How models are trained, judged and registered, bound to the environment."""

import dagster as dg

from mltrading_assets.lib.resources import ModelingResource, env_or


def modeling_resource() -> ModelingResource:
    return ModelingResource(
        horizon_bars=env_or("MLTRADING_MODEL_HORIZON_BARS", 1),
        history_days=env_or("MLTRADING_MODEL_HISTORY_DAYS", 365),
        algorithm=env_or("MLTRADING_MODEL_ALGORITHM", "lightgbm"),
        promotion_margin=env_or("MLTRADING_MODEL_PROMOTION_MARGIN", 0.002),
        mlflow_tracking_uri=env_or("MLTRADING_MLFLOW_TRACKING_URI", ""),
        home=env_or("MLTRADING_HOME", ""),
    )


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"modeling": modeling_resource()})
