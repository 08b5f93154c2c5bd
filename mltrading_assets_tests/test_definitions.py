"""The system's shape, pinned: every asset, check, job, schedule, sensor, resource and the
executor, as one snapshot (``__snapshots__/test_definitions.ambr``). A change to any of them
fails here until the snapshot is updated (``pytest --snapshot-update``), so it shows in review.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mltrading_assets.definitions import EXECUTOR_CONFIG, defs
from mltrading_assets.paths import PROJECT_ROOT


def _policy(policy: dg.RetryPolicy | None) -> dict | None:
    if policy is None:
        return None
    return {
        "max_retries": policy.max_retries,
        "delay": policy.delay,
        "backoff": policy.backoff.value if policy.backoff else None,
        "jitter": policy.jitter.value if policy.jitter else None,
    }


def _partitions(partitions_def) -> str | None:
    if partitions_def is None:
        return None
    name = getattr(partitions_def, "name", None)
    return f"{type(partitions_def).__name__}({name})" if name else type(partitions_def).__name__


def system_shape(definitions: dg.Definitions) -> dict:
    """What a reviewer should see change: names, targets, timing, partitions, settings."""
    graph = definitions.resolve_asset_graph()
    repository = definitions.get_repository_def()
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        spec = node.assets_def.specs_by_key[key]
        policy = node.assets_def.backfill_policy
        assets[key.to_user_string()] = {
            "partitions": _partitions(node.partitions_def),
            "deps": sorted(dep.to_user_string() for dep in node.parent_keys),
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "owners": list(spec.owners),
            "pool": next(iter(node.assets_def.node_def.pools), None),
            "backfill_policy": policy.max_partitions_per_run if policy else None,
            "retry_policy": _policy(node.assets_def.node_def.retry_policy),
            "checks": sorted(
                check.name for check in graph.asset_check_keys if check.asset_key == key
            ),
        }
    jobs = {}
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        nodes = sorted(job.graph.node_dict)
        jobs[job.name] = {"steps": nodes, "tags": dict(job.tags)}
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "job": s.job_name,
            "default_status": s.default_status.value,
        }
        for s in sorted(repository.schedule_defs, key=lambda s: s.name)
    }
    sensors = {
        s.name: {
            "type": s.sensor_type.value,
            "jobs": sorted(target.job_name for target in s.targets),
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in sorted(repository.sensor_defs, key=lambda s: s.name)
    }
    resources = {
        name: {
            "class": type(resource).__name__,
            "settings": sorted(type(resource).model_fields),
        }
        for name, resource in sorted(definitions.resources.items())
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": resources,
        "executor": {
            job.name: job.executor_def.name
            for job in repository.get_all_jobs()
            if not job.name.startswith("__")
        },
    }


def test_definitions_match_the_snapshot(snapshot):
    assert {**system_shape(defs), "executor_config": EXECUTOR_CONFIG} == snapshot


def test_dg_check_defs_passes(database_url, dagster_home):
    # The `dg` CLI loads the project the way a deployment does, from pyproject's [tool.dg].
    env = {**os.environ, "MLTRADING_DATABASE_URL": database_url, "DAGSTER_HOME": str(dagster_home)}
    dg_cli = Path(sys.executable).with_name("dg")
    result = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_the_engine_imports_without_dagster():
    # The feature library, sources, app database access, workers, calendar and charts must
    # stay usable in a notebook or a worker with no Dagster at all.
    engine = [
        "mltrading_assets.features",
        "mltrading_assets.sources",
        "mltrading_assets.db.bars",
        "mltrading_assets.db.feature_rows",
        "mltrading_assets.db.symbols",
        "mltrading_assets.workers.bar_task",
        "mltrading_assets.workers.feature_task",
        "mltrading_assets.trading_calendar",
        "mltrading_assets.charts",
    ]
    code = (
        "import sys\n"
        "sys.modules['dagster'] = None  # any `import dagster` now raises ImportError\n"
        + "".join(f"import {module}\n" for module in engine)
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_training_launchpad_holds_every_modeling_setting(monkeypatch):
    # model_training_job opens its launchpad with this: every setting (a partial resource
    # config would reset the others to their defaults), a variable's setting as {"env": ...}.
    from mltrading_assets.defs.models.resources import modeling_resource
    from mltrading_assets.lib.resources import ModelingResource, as_run_config

    monkeypatch.setenv("MLTRADING_MODEL_HORIZON_BARS", "3")
    monkeypatch.delenv("MLTRADING_MODEL_ALGORITHM", raising=False)
    config = as_run_config(modeling_resource())
    assert set(config) == set(ModelingResource.model_fields)
    assert config["horizon_bars"] == {"env": "MLTRADING_MODEL_HORIZON_BARS"}
    assert config["algorithm"] == "lightgbm"
