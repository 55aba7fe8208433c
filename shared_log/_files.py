"""File names and atomic metadata files.

Strategy: segment names are the base offset zero-padded to 20 digits so that ``ls`` sorts
them in offset order (Kafka's LogFileUtils); format and parse come in pairs. Small
metadata files (recovery point, acked offsets) are replaced atomically: write a temp file,
fsync it, rename it over the old one, fsync the directory, so a crash leaves either the
old or the new content, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
_DIGITS = 20


def segment_name(base_offset: int, suffix: str) -> str:
    """``segment_name(42, ".log") == "00000000000000000042.log"``."""
    if base_offset < 0:
        raise ValueError(f"negative base offset {base_offset}")
    return f"{base_offset:0{_DIGITS}d}{suffix}"


def parse_segment_name(name: str, suffix: str) -> int | None:
    """The base offset of a segment file name, or None when it is not one."""
    if not name.endswith(suffix):
        return None
    stem = name[: -len(suffix)]
    if len(stem) != _DIGITS or not (stem.isascii() and stem.isdigit()):
        return None
    return int(stem)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # e.g. ENOSPC: leave no half-written temp file
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_checkpoint(path: str | os.PathLike[str], value: Any) -> None:
    """Persist a small JSON value atomically (acked offsets, recovery point...)."""
    atomic_write(path, json.dumps(value, sort_keys=True).encode())


def read_checkpoint(path: str | os.PathLike[str], default: Any = None) -> Any:
    """Read a checkpoint written by write_checkpoint; ``default`` when missing or unreadable.

    An unreadable checkpoint can only come from outside interference (the write is
    atomic), and every checkpoint here is a hint that a slower path can recompute, so it
    is treated as missing rather than fatal.
    """
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        return default
