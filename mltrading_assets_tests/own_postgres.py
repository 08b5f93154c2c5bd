"""A PostgreSQL server of a test's own, so stopping or restarting it touches nothing else.

Built from the machine's PostgreSQL binaries (``initdb``/``pg_ctl``), run as the ``postgres``
user when the tests run as root (the server refuses root), on a free loopback port, trust
auth, no Unix socket.
"""

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from mltrading_assets_tests.conftest import free_port


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found


class OwnPostgres:
    """``start``/``stop``/``restart`` one throw-away cluster; ``url(db)`` for a database."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.root = Path(tempfile.mkdtemp(prefix="mltrading-fault-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            self.root.chmod(0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '{host}'\n"
                "unix_socket_directories = ''\nfsync = off\nmax_connections = 100\n"
            )
        if host != "127.0.0.1":
            # The test's own hosts reach it across their links (addresses of its /24).
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {host}/24 trust\n")

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as_postgres, *args], check=True, capture_output=True, text=True, timeout=120
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._ctl("-l", str(self.data / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (rolling it back); ``immediate`` is a crash."""
        self._ctl("-m", mode, "stop")

    def restart(self, down_seconds: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def is_running(self) -> bool:
        return (
            subprocess.run(
                [*self._as_postgres, _bin("pg_ctl"), "-D", str(self.data), "status"],
                capture_output=True,
            ).returncode
            == 0
        )

    def create_database(self, name: str) -> str:
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            if self.is_running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
