"""``mltrading models``: the registry's versions and champion, retraining, and promotion or
rollback by hand (with a reason, logged in system_logs like the gate's own decisions)."""

import os
import uuid

import click

from mltrading_assets.cli import environment as env
from mltrading_assets.names import ModelAliases


def _registry(url: str):
    from mltrading_assets.lib.resources import ModelingResource

    modeling = ModelingResource(
        mlflow_tracking_uri=os.environ.get("MLTRADING_MLFLOW_TRACKING_URI", ""),
        home=os.environ.get("MLTRADING_HOME", ""),
    )
    return modeling.registry(url)


@click.group()
def models() -> None:
    """The direction model: versions, champion, retraining, promotion and rollback."""


@models.command("list")
def list_versions() -> None:
    """Every registered version, newest last, with its aliases and holdout scores."""
    registry = _registry(env.ready_environment())
    versions = registry.versions()
    if not versions:
        click.echo("no model versions yet: `mltrading models train` trains the first")
        return
    click.echo("version  aliases              created (UTC)     algorithm               AUC")
    for info in versions:
        metrics = registry.client.get_run(info.run_id).data.metrics if info.run_id else {}
        auc = metrics.get("holdout_roc_auc")
        click.echo(
            f"{info.version:<9}{','.join(info.aliases) or '-':<21}"
            f"{info.created:%Y-%m-%d %H:%M}  {info.tags.get('algorithm', ''):<22}"
            f"{'' if auc is None else f'{auc:.4f}':>6}"
        )


@models.command()
def champion() -> None:
    """The live model: version, when and why it was promoted."""
    info = _registry(env.ready_environment()).by_alias(ModelAliases.CHAMPION)
    if info is None:
        raise click.ClickException("no champion yet: `mltrading models train` trains one")
    click.echo(f"champion: version {info.version} (run {info.run_id})")
    for tag in ("promoted_at", "promotion_reason", "previous_champion", "horizon_bars"):
        if tag in info.tags:
            click.echo(f"  {tag}: {info.tags[tag]}")


@models.command()
def train() -> None:
    """Retrain now (as the 02:00 schedule does): the champion changes only past the gate."""
    import dagster as dg

    from mltrading_assets.defs.models.assets import latest_metadata, model_evaluation
    from mltrading_assets.lib.launching import train_models

    url = env.ready_environment()
    env.quiet_dagster_warnings()
    before = _registry(url).by_alias(ModelAliases.CHAMPION)
    with env.instance() as instance:
        run = train_models(instance)
        evaluated = latest_metadata(instance, model_evaluation.key)
        gates = [
            record.event_log_entry.dagster_event.event_specific_data
            for record in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
        ]
    champion_info = _registry(url).by_alias(ModelAliases.CHAMPION)
    click.echo(f"run {run.run_id}: {'ok' if run.success else 'FAILED'}")
    changed = champion_info is not None and champion_info.version != (
        before.version if before else None
    )
    if evaluated:
        click.echo(f"candidate: version {evaluated['candidate_version']}")
    for gate in gates:
        verdict = "promoted" if gate.passed else "not promoted"
        click.echo(f"{verdict}: {gate.description}")
    click.echo(f"champion: version {champion_info.version if champion_info else 'none'}")
    if changed:
        _predict_with_champion(url)
    if not run.success:
        if not gates:
            click.echo("a step failed before the gate: see the run in the UI", err=True)
        raise SystemExit(1)


def _predict_with_champion(url: str) -> None:
    """Predictions follow a new champion: the daemon's promotion sensor does it when a daemon
    runs; without one, this command does it now (else they stay on the old model)."""
    from mltrading_assets.db.symbols import active_symbols
    from mltrading_assets.lib.launching import predict_with_new_champion
    from mltrading_assets.lib.partitions import partitions_among

    with env.connection(url) as conn:
        names = active_symbols(conn)
    with env.instance() as instance:
        symbols = partitions_among(instance, names).symbols
        if not symbols:
            return
        runs = predict_with_new_champion(instance, symbols)
    if runs is None:
        click.echo("predictions: the running daemon predicts every active symbol with it")
        return
    failed = sum(1 for run in runs if not run.success)
    click.echo(
        f"predictions: {len(symbols)} symbols in {len(runs)} run(s)"
        + (f", {failed} failed: see them in the UI" if failed else "")
    )


def _set_champion(url: str, version: str, status: str, reason: str) -> None:
    import dagster as dg

    from mltrading_assets.db.system_logs import log_model_event
    from mltrading_assets.defs.models.assets import champion_model

    registry = _registry(url)
    try:
        registry.version(version)
    except Exception:
        raise click.BadParameter(f"no version {version} of {registry.name}") from None
    previous = registry.promote(version, f"by hand: {reason}")
    replaced = previous.version if previous else "none"
    with env.connection(url, begin=True) as conn:
        log_model_event(
            conn,
            f"cli-{uuid.uuid4().hex[:12]}",
            status,
            version,
            f"version {version} replaces {replaced} by hand: {reason}",
        )
    # Recorded on the asset, so the UI shows it and the sensor re-predicts every symbol.
    with env.instance() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                champion_model.key,
                metadata={"model_version": version, "replaced_version": replaced, "reason": reason},
            )
        )
    click.echo(f"champion: version {version} (was {replaced})")
    _predict_with_champion(url)


@models.command()
@click.argument("version")
@click.option("--reason", required=True, help="Why, for the log (system_logs).")
def promote(version: str, reason: str) -> None:
    """Make VERSION the champion by hand, bypassing the gate."""
    _set_champion(env.ready_environment(), version, "PROMOTED", reason)


@models.command()
@click.option("--to", "version", help="Version to go back to (default: the previous champion).")
@click.option("--reason", required=True, help="Why, for the log (system_logs).")
def rollback(version: str | None, reason: str) -> None:
    """Put the previous champion back."""
    url = env.ready_environment()
    current = _registry(url).by_alias(ModelAliases.CHAMPION)
    version = version or (current.tags.get("previous_champion") if current else None)
    if not version:
        raise click.ClickException("no earlier champion to go back to: name one with --to")
    _set_champion(url, version, "ROLLED_BACK", reason)
