"""Direction models trained on the stored features: the point-in-time dataset, walk-forward
training, scoring against the champion and the baselines, the promotion gate and the MLflow
registry. Pure Python and MLflow; no Dagster import (``defs/models`` drives it)."""
