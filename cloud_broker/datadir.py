"""One broker per data directory: an exclusive lock held for the life of the process.

Strategy: ``flock`` on ``<data_dir>/broker.lock``, taken before anything in the directory
is opened (partitions, ingest state, groups, mirror checkpoints) and released by the
kernel when the process dies, even by SIGKILL, so a crash never leaves a stale lock. A
second ``cloud-broker serve`` on the same directory stops at start with a one-line error
naming ``data_dir`` instead of writing the same logs and running the same mirrors twice.
The holder's pid is written into the file for that message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .config import ConfigError

LOCK_FILE = "broker.lock"


class DataDirLock:
    """The held lock on one data directory; ``release()`` (or process exit) frees it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError("data_dir", f"cannot use {data_dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).strip() or b'0')})"
            os.close(fd)
            raise ConfigError("data_dir", f"{data_dir} is in use by another cloud-broker"
                                          f"{holder}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


__all__ = ["LOCK_FILE", "DataDirLock"]
