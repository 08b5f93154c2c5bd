"""Dagster resources: the database, the bar source and the per-symbol processing settings."""

import os

import dagster as dg

from mltrading_assets.resources.database import PostgresResource
from mltrading_assets.resources.processing import ProcessingResource
from mltrading_assets.resources.source import BarSourceResource

__all__ = ["BarSourceResource", "PostgresResource", "ProcessingResource", "env_or"]


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
