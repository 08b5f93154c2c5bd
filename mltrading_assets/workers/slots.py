"""Request slots: at most N requests in flight, across the worker processes of one step
(``RequestSlots``) or across hosts (``SharedRequestSlots``).

A semaphore held by a worker that is killed mid-request (a per-symbol timeout, a crash) would
stay taken for the rest of the step. Each slot here is a file locked with ``flock``, which the
kernel releases when the holding process dies, however it dies.
"""

import contextlib
import fcntl
import os
import select
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from mltrading_assets.db.engine import create_app_engine


class RequestSlots:
    """``count`` slots in ``folder``; picklable (only the folder and count travel)."""

    def __init__(self, folder: str, count: int) -> None:
        self.folder = folder
        self.count = count
        self._held: int | None = None
        self._files: list[int] = []

    @classmethod
    def create(cls, count: int) -> "RequestSlots":
        return cls(tempfile.mkdtemp(prefix="mltrading-slots-"), count)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "count": self.count}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state["count"])

    def _open(self) -> list[int]:
        if not self._files:
            self._files = [
                os.open(Path(self.folder) / f"slot-{i}", os.O_CREAT | os.O_RDWR, 0o600)
                for i in range(self.count)
            ]
        return self._files

    def __enter__(self) -> "RequestSlots":
        files = self._open()
        while True:
            for index, fd in enumerate(files):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                self._held = index
                return self
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self._held is not None:
            fcntl.flock(self._files[self._held], fcntl.LOCK_UN)
            self._held = None


class SharedRequestSlots:
    """``count`` slots per ``scope``, shared by every process on every host that reaches the
    database: PostgreSQL session-level advisory locks ``(scope key, slot)``.

    The server releases a lock when its session ends, so a holder that is killed frees its
    slot at once; a holder whose link is cut frees it when the server's TCP keepalive gives
    up on the session (``db.engine`` asks for ~25 s). The lock is taken on the connection
    the symbol's task already holds (``bind``), so slots cost no connection of their own.
    """

    def __init__(self, scope: str, count: int, database_url: str) -> None:
        self.scope = scope
        self.count = count
        self.database_url = database_url
        # pg_try_advisory_lock(int4, int4): the scope hashed into the first key.
        self.key = zlib.crc32(f"mltrading-requests:{scope}".encode()) - 2**31
        # Waiters listen here for releases instead of asking again every 5 ms: one worker of
        # each step always waits, and its asking cost ~400 round trips a second, ~4% of a
        # one-core host's CPU on a refresh (and as many statements on the server).
        self.channel = f"mltrading_slots_{self.key & 0xFFFFFFFF}"
        self._conn: sa.Connection | None = None
        self._engine: sa.Engine | None = None
        self._own: sa.Connection | None = None
        self._held: int | None = None

    def __getstate__(self) -> dict:
        return {"scope": self.scope, "count": self.count, "database_url": self.database_url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["scope"], state["count"], state["database_url"])

    @contextlib.contextmanager
    def bind(self, conn: sa.Connection) -> Iterator[None]:
        """Take slots on ``conn`` (outside any transaction of its own) while inside."""
        self._conn = conn
        try:
            yield
        finally:
            self._conn = None

    def __enter__(self) -> "SharedRequestSlots":
        conn = self._conn
        if conn is None:
            # A request outside a symbol's task: a connection of its own, for this request.
            if self._engine is None:
                self._engine = create_app_engine(self.database_url, pool_size=1)
            conn = self._own = self._engine.connect()
        raw = conn.connection.dbapi_connection
        raw.notifies.clear()  # notices of earlier releases: a try comes first anyway
        listening = False
        while True:
            slot = conn.execute(_TRY_SLOT, {"key": self.key, "count": self.count}).scalar()
            conn.commit()
            if slot is not None:
                self._held = slot
                return self
            if not listening:
                # A slot freed between the try above and this LISTEN is found by the next try.
                conn.execute(sa.text(f"LISTEN {self.channel}"))
                conn.commit()
                listening = True
                continue
            # Woken by a release's notice, or after a while: a holder that died frees its
            # slot with its session, and nobody is told.
            if select.select([raw], [], [], NOTICE_WAIT_S)[0]:
                raw.poll()
                raw.notifies.clear()

    def __exit__(self, *exc) -> None:
        slot, self._held = self._held, None
        conn = self._conn or self._own
        try:
            if slot is not None and conn is not None:
                conn.execute(
                    _RELEASE_SLOT, {"key": self.key, "slot": slot, "channel": self.channel}
                )
                conn.commit()
        except sa.exc.DBAPIError:
            # The session is gone, and its lock with it; the task's own retry reconnects.
            pass
        finally:
            if self._own is not None:
                self._own.close()  # back to its pool, its lock released above
                self._own = None


# The first free slot; a plain scan with LIMIT 1 stops at the first lock it gets.
_TRY_SLOT = sa.text(
    "SELECT slot FROM generate_series(0, :count - 1) AS slot "
    "WHERE pg_try_advisory_lock(:key, slot) LIMIT 1"
)
_RELEASE_SLOT = sa.text("SELECT pg_advisory_unlock(:key, :slot), pg_notify(:channel, '')")
# The longest a waiter sleeps without a notice (a killed holder's slot, freed unannounced).
NOTICE_WAIT_S = 0.05
