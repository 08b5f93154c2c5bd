"""Hosts of a test's (or the benchmark's) own: Linux network namespaces on a bridge, and the
services they reach bound to the bridge (the machine's own listen on 127.0.0.1, which a
namespace cannot reach): a PostgreSQL, a RabbitMQ and the Yahoo-compatible server. Nothing
here sends traffic beyond the bridge; everything is removed at the end."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets_tests.conftest import free_port
from mltrading_assets_tests.fake_yahoo import FakeYahoo
from mltrading_assets_tests.own_postgres import OwnPostgres
from mltrading_assets_tests.test_yahoo import after_close


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsHosts:
    """``count`` hosts, each a network namespace with one veth link to a bridge whose own
    address (``gateway``) is where the services they use listen."""

    _built = 0

    def __init__(self, count: int) -> None:
        # Unique per set built by this process too: a namespace's veth may outlive its
        # deletion for a moment, and the benchmark builds one set after another.
        NetnsHosts._built += 1
        tag = (os.getpid() * 7 + NetnsHosts._built) % 10000
        # A /24 of the private range picked from the pid, so parallel runs do not meet.
        self.subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"mltbr{tag}"
        self.names = [f"mlt{tag}h{i}" for i in range(1, count + 1)]
        self.links = [f"mltv{tag}h{i}" for i in range(1, count + 1)]
        self.addresses = [f"{self.subnet}.{10 + i}" for i in range(1, count + 1)]

    def __enter__(self) -> "NetnsHosts":
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for name, link, address in zip(self.names, self.links, self.addresses, strict=True):
                _ip("netns", "add", name)
                _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name)
                _ip("link", "set", link, "master", self.bridge, "up")
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def popen(self, index: int, command: list[str], env: dict[str, str], log: Path):
        """Start ``command`` on host ``index`` (0-based), in a session of its own."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.names[index], *command],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self, index: int) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.names[index]], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def kill_all(self, index: int) -> list[int]:
        """``kill -9`` every process of host ``index``, as a machine that loses power."""
        pids = self.pids(index)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def cut(self, index: int, connected: bool = False) -> None:
        """Cut host ``index``'s link (its processes live on, unreachable), or reconnect it."""
        _ip("link", "set", self.links[index], "up" if connected else "down")

    def __exit__(self, *exc) -> None:
        for index, name in enumerate(self.names):
            with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
                self.kill_all(index)
                _ip("netns", "del", name)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", self.links[index])
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.bridge)


class OwnRabbitMQ:
    """A RabbitMQ node of the test's own, listening on ``address`` only."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mltrading-rabbitmq-"))
        self.node = f"mltrading{os.getpid()}@localhost"
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {address}:{self.port}\n"
            # guest may log in from another address than loopback (our hosts).
            "loopback_users = none\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"pyamqp://guest:guest@{self.address}:{self.port}//"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "HOME": str(self.root),  # its Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_DIST_PORT": str(free_port()),
        }
        # The server script itself: /usr/sbin's wrapper would switch to the rabbitmq user,
        # who may not write this folder.
        script = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        self.process = subprocess.Popen(
            [script if os.path.exists(script) else "rabbitmq-server"],
            cwd=self.root,
            env=env,
            stdout=(self.root / "server.out").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, self.port), 1),
            ):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"RabbitMQ did not start: {(self.root / 'server.out').read_text()}")

    def restart(self) -> None:
        """Stopped as a service manager stops it (SIGTERM: a clean shutdown that keeps its
        durable queues), then started again on the same port."""
        self._signal_and_wait(signal.SIGTERM)
        self.start()

    def stop(self) -> None:
        self._signal_and_wait(signal.SIGKILL)

    def _signal_and_wait(self, signum: int, timeout: float = 60.0) -> None:
        # The server script and its Erlang VM share the process group started for them.
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)
        self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(group, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Cluster:
    """Worker hosts running `mltrading worker`, and the services they share, all on a
    bridge; ``env`` is the control host's (this namespace's) environment for `mltrading`."""

    hosts: NetnsHosts
    yahoo: FakeYahoo
    broker: OwnRabbitMQ
    engine: sa.Engine
    url: str
    env: dict[str, str]
    folder: Path
    pin_cores: bool = False
    workers: list = field(default_factory=list)

    def start_worker(self, index: int) -> None:
        name = f"host{index + 1}"
        env = {
            **self.env,
            "MLTRADING_HOME": str(self.folder / name),
            "MLTRADING_YFINANCE_CACHE_DIR": str(self.folder / name / "yfinance"),
        }
        command = [sys.executable, "-m", "mltrading_assets.cli", "worker", "--name", name]
        if self.pin_cores:
            # Each host on a core of its own: a 2-core machine can show 2 hosts scaling.
            command = ["taskset", "-c", str(index % os.cpu_count()), *command]
        self.workers[index] = self.hosts.popen(index, command, env, self.folder / f"{name}.log")

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mltrading_assets.cli", *args],
            cwd=PROJECT_ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=1800,
        )

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> str:
        """`mltrading doctor`'s report once ``count`` workers answer (or at the deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            doctor = self.cli("doctor").stdout
            if doctor.count("worker mltrading@host") == count or time.monotonic() > deadline:
                return doctor
            time.sleep(1)


@contextlib.contextmanager
def cluster(
    folder: Path, hosts: int = 2, *, pin_cores: bool = False, env: dict | None = None
) -> Iterator[Cluster]:
    """``hosts`` worker hosts with a PostgreSQL, a RabbitMQ and a Yahoo-compatible server of
    their own (clock after the newest close, 0.2 s a request), removed on exit."""
    with NetnsHosts(hosts) as netns:
        postgres = OwnPostgres(host=netns.gateway)
        broker = OwnRabbitMQ(netns.gateway)
        yahoo = FakeYahoo(now=after_close(), latency_s=0.2, address=netns.gateway)
        built = None
        try:
            postgres.start()
            url = postgres.create_database("cluster")
            broker.start()
            yahoo.start()
            inherited = {
                k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER", "MLTRADING"))
            }
            control = {
                **inherited,
                **yahoo.env(),
                "MLTRADING_DATABASE_URL": url,
                "MLTRADING_CELERY_BROKER": broker.url,
                "MLTRADING_SOURCE": "yahoo",
                "MLTRADING_HOME": str(folder / "control"),
                "MLTRADING_HOST_NAME": "control",
                "MLTRADING_YFINANCE_CACHE_DIR": str(folder / "control" / "yfinance"),
                **(env or {}),
            }
            engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
            built = Cluster(
                netns, yahoo, broker, engine, url, control, folder, pin_cores, [None] * hosts
            )
            done = built.cli("db", "init")
            assert done.returncode == 0, done.stdout + done.stderr
            for index in range(hosts):
                built.start_worker(index)
            doctor = built.wait_for_workers(hosts)
            assert doctor.count("worker mltrading@host") == hosts, doctor
            yield built
        finally:
            if built is not None:
                built.engine.dispose()
            yahoo.stop()
            broker.close()
            postgres.close()
