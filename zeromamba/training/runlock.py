"""One run per run folder: an exclusive lock on ``<out>/.lock`` held while a run trains.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the process ends in
any way (SIGKILL included): a lock file left by a killed run is not a lock, and the next run or
``--resume`` takes it at once. The file holds the owner's pid and host for the message a second
run gets. Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"


class RunFolderBusyError(RuntimeError):
    """Another live process is training into the same run folder."""


class RunLock:
    """``with RunLock(out):`` holds the folder's lock or raises :class:`RunFolderBusyError`."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OSError(e.errno, f"cannot create the run lock {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.path.parent} is in use by a running training ({owner}); wait for it "
                "to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:  # noqa: PYI034
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
