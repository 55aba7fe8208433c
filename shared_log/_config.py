"""Log configuration: segment size, commit policy, retention and the full policy.

Strategy: plain frozen dataclasses validated in ``__post_init__`` so a bad value fails when
the config is built (naming the field), not on the first append. Enum fields also accept
their string values (from a config file) and are converted, so a misspelt full policy
fails here instead of silently behaving like another one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar

_E = TypeVar("_E", bound=enum.Enum)

#: Segment file positions are stored as u32 in the index.
MAX_SEGMENT_BYTES = 2**32 - 1


def _as_enum(obj: object, name: str, cls: type[_E], label: str) -> None:
    value: Any = getattr(obj, name)
    try:
        converted = cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"{label} must be one of {allowed}, not {value!r}") from None
    object.__setattr__(obj, name, converted)


class CommitMode(enum.Enum):
    #: fsync before append() returns: one durability point per batch.
    EVERY_BATCH = "every_batch"
    #: a background flusher fsyncs at most once per interval_ms (at once after a quiet
    #: spell) or per max_records; callers wait
    #: for their offset with wait_durable() / wait_durable_async().
    GROUP = "group"
    #: never fsync on append (roll and close still do): the page cache is the durability point.
    OS = "os"


class FullPolicy(enum.Enum):
    #: delete the oldest segments, acknowledged or not, counting what was dropped: to
    #: stay under max_bytes, and when the file system is full (ENOSPC).
    DROP_OLDEST = "drop_oldest"
    #: refuse the append with LogFull; nothing existing is touched.
    REJECT_NEW = "reject_new"


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    mode: CommitMode = CommitMode.GROUP
    interval_ms: float = 2.0
    max_records: int = 10_000

    def __post_init__(self) -> None:
        _as_enum(self, "mode", CommitMode, "commit.mode")
        if self.interval_ms < 0:
            raise ValueError("commit.interval_ms must be >= 0")
        if self.max_records < 1:
            raise ValueError("commit.max_records must be >= 1")


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 64 * 1024 * 1024
    index_interval_bytes: int = 4096
    commit: CommitPolicy = field(default_factory=CommitPolicy)
    #: delete sealed segments past this total size (None: keep).
    retention_bytes: int | None = None
    #: delete sealed segments whose last write is older than this (None: keep).
    retention_ms: int | None = None
    #: hard cap on the log's size on disk, enforced on append by ``full_policy``.
    max_bytes: int | None = None
    full_policy: FullPolicy = FullPolicy.REJECT_NEW

    def __post_init__(self) -> None:
        _as_enum(self, "full_policy", FullPolicy, "full_policy")
        if not 1024 <= self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be between 1024 and {MAX_SEGMENT_BYTES}")
        if self.index_interval_bytes < 1:
            raise ValueError("index_interval_bytes must be >= 1")
        for name in ("retention_bytes", "retention_ms", "max_bytes"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be > 0 when set")
