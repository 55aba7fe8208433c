"""Partition storage: the broker's durable data, one log per topic-partition.

``interface`` states what the broker needs of a partition (``PartitionLog``) and of the
set of them (``PartitionStoreAPI``), with the errors every store raises; ``log_store``
implements it on shared_log (``PartitionStore``, ``Partition``).
"""

from .interface import (
    InvalidRecord,
    LogError,
    OffsetOutOfRange,
    PartitionLog,
    PartitionStoreAPI,
    UnknownTopic,
)
from .log_store import Partition, PartitionStore

__all__ = ["InvalidRecord", "LogError", "OffsetOutOfRange", "Partition", "PartitionLog",
           "PartitionStore", "PartitionStoreAPI", "UnknownTopic"]
