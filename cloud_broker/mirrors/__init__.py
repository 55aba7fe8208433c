"""Mirrors: resumable, checkpointed replication of partitions to downstream targets.

One interface (``target.Target``: write a batch of a partition, report the position the
target holds) with one module per backend (``broker_target``, ``nats_target``,
``sql_target``, ``postgres_target``), one loop (``runner``) that tails partitions from a
``source`` and checkpoints in ``checkpoints`` (SQLite), and the ``manager`` that runs the
mirrors of a process. docs/mirrors.md describes the configuration and the guarantees per target.
"""

from .checkpoints import CheckpointStore
from .manager import MirrorCollector, MirrorExists, MirrorManager, build_target
from .runner import MirrorRunner, PartitionStatus
from .settings import MirrorConfig, parse_mirror, parse_mirrors
from .source import HttpSource, LocalSource, Source, SourceBatch, SourceUnavailable
from .target import Target, TargetConflict, TargetError, TargetRejected, TargetUnavailable

__all__ = [
    "CheckpointStore",
    "HttpSource",
    "LocalSource",
    "MirrorCollector",
    "MirrorConfig",
    "MirrorExists",
    "MirrorManager",
    "MirrorRunner",
    "PartitionStatus",
    "Source",
    "SourceBatch",
    "SourceUnavailable",
    "Target",
    "TargetConflict",
    "TargetError",
    "TargetRejected",
    "TargetUnavailable",
    "build_target",
    "parse_mirror",
    "parse_mirrors",
]
