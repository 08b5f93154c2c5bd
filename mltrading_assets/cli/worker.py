"""``mltrading worker``: start a worker host that runs steps sent through Celery."""

import os
import socket
import sys

import click

from mltrading_assets.cli import environment as env

CELERY_APP = "mltrading_assets.lib.celery_worker"


def celery_command(name: str, queues: str, concurrency: int, log_level: str) -> list[str]:
    # Prefork: each step runs in a pool child while the worker's main process keeps the
    # broker connection alive (a solo worker sends no heartbeat during a long step, and the
    # broker then drops it and hands the step to another host while it still runs).
    return [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        "--queues", queues,
        "--hostname", f"mltrading@{name}",
        "--loglevel", log_level.upper(),
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


@click.command()
@click.option(
    "--name",
    default=lambda: os.environ.get("MLTRADING_HOST_NAME") or socket.gethostname(),
    show_default="MLTRADING_HOST_NAME or the machine's name",
    help="the host's name on runs, materializations and request slots",
)
@click.option(
    "--queues",
    default="dagster",
    show_default=True,
    help="comma-separated queues to take steps from (see MLTRADING_QUEUE_BARS, "
    "MLTRADING_QUEUE_FEATURES, MLTRADING_QUEUE_TRAINING)",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="steps at once; each step already uses a worker process per core",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def worker(name: str, queues: str, concurrency: int, log_level: str) -> None:
    """Run steps on this host: take them from the broker (MLTRADING_CELERY_BROKER) and run
    each in its own process against the same database (MLTRADING_DATABASE_URL).

    Every host (the one with the UI and daemon, and each worker host) needs the same
    MLTRADING_CELERY_BROKER, MLTRADING_DATABASE_URL and source settings. Ctrl-C stops the
    worker after the step it runs; a second Ctrl-C at once, and the step goes back to the
    broker for another host."""
    from mltrading_assets.lib import distributed

    if not distributed.enabled():
        raise click.ClickException(
            "set MLTRADING_CELERY_BROKER (e.g. pyamqp://guest:guest@BROKER-HOST:5672//) on "
            "this host and on the one that runs the daemon"
        )
    env.ready_environment()
    os.environ["MLTRADING_HOST_NAME"] = name
    click.echo(
        f"worker host {name}: {concurrency} step(s) at once from queue(s) {queues} "
        f"(broker {distributed.redacted_broker()})"
    )
    os.execv(sys.executable, celery_command(name, queues, concurrency, log_level))
