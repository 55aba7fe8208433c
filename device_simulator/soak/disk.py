"""The edge's disk for the soak: a small tmpfs the schedule can fill for a while.

Strategy: the agent's data directory is a tmpfs of ``size_mb`` when the harness may
mount one (root, and a kernel/container that allows it); a disk-full spell then fills
the free space with one preallocated file and removes it at the end of the spell, so
the agent meets a real ENOSPC on its segments, checkpoints and dead-letter log. Where
mounting is not allowed, the directory is plain and every disk-full spell is skipped
with a message (``available`` False, ``why`` says why).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path


class EdgeDisk:
    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.available = False
        self.why = ""
        self.filler = path / ".disk-full-filler"

    def mount(self) -> EdgeDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            self.why = "not root: cannot mount a tmpfs (disk-full spells skipped)"
            return self
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m",
                              "tmpfs", str(self.path)], capture_output=True, text=True)
        if res.returncode != 0:
            self.why = (f"mount tmpfs refused ({res.stderr.strip() or res.returncode}): "
                        "disk-full spells skipped")
            return self
        self.available = True
        return self

    @property
    def data_dir(self) -> Path:
        return self.path / "edge"

    def fill(self) -> int:
        """Take every free byte; returns how many were taken."""
        if not self.available:
            return 0
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, free)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def unmount(self) -> None:
        self.free()
        if self.available:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.available = False
