"""Request slots shared by the worker processes of one step: at most N requests in flight.

A semaphore held by a worker that is killed mid-request (a per-symbol timeout, a crash) would
stay taken for the rest of the step. Each slot here is a file locked with ``flock``, which the
kernel releases when the holding process dies, however it dies.
"""

import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path


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
