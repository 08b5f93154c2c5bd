"""``mltrading worker``: start a worker host that runs steps sent through Celery."""

import os
import socket
import subprocess
import sys

import click

from mltrading_assets.cli import environment as env

CELERY_APP = "mltrading_assets.lib.celery_worker"


def celery_command(name: str, index: int, queues: str, log_level: str) -> list[str]:
    # --pool solo: the step runs in the worker process itself, which may start the step's
    # per-symbol worker processes (a prefork child is daemonic and may not).
    return [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
        "--pool", "solo",
        "--queues", queues,
        "--hostname", f"mltrading{index}@{name}",
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
    commands = [celery_command(name, i, queues, log_level) for i in range(1, concurrency + 1)]
    click.echo(
        f"worker host {name}: {concurrency} step(s) at once from queue(s) {queues} "
        f"(broker {distributed.redacted_broker()})"
    )
    if concurrency == 1:
        os.execv(sys.executable, commands[0])
    raise SystemExit(_run_all(commands))


def _run_all(commands: list[str]) -> int:
    """Several solo workers; each dies with this process (a killed host leaves none)."""
    from mltrading_assets.workers.lifeline import die_with_parent

    children = [subprocess.Popen(command, preexec_fn=die_with_parent) for command in commands]
    try:
        return max(child.wait() for child in children)
    except KeyboardInterrupt:
        for child in children:
            child.terminate()  # Celery's warm shutdown: the running step finishes first
        return max(child.wait() for child in children)
