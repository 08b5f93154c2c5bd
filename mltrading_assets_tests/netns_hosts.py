"""Hosts of a test's own: Linux network namespaces on a bridge, and a RabbitMQ broker bound
to the bridge (the machine's own services listen on 127.0.0.1, which a namespace cannot
reach). Nothing here sends traffic beyond the bridge; everything is removed at the end."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mltrading_assets_tests.conftest import free_port


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsHosts:
    """``count`` hosts, each a network namespace with one veth link to a bridge whose own
    address (``gateway``) is where the services they use listen."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 10000
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

    def __exit__(self, *exc) -> None:
        for index, name in enumerate(self.names):
            with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
                self.kill_all(index)
                _ip("netns", "del", name)
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

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Erlang's own helpers of this node (its beam outlives the script's process group).
        subprocess.run(["pkill", "-9", "-f", self.node], capture_output=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
