"""The JetStream partition store: cluster mode's partitions in a NATS JetStream cluster.

``JetStreamStore`` implements ``storage.interface.PartitionStoreAPI`` with one stream per
topic-partition (``_store``); each partition (``_partition``) writes pieces with
``Nats-Expected-Last-Sequence`` and keeps a view of its stream (``_view``) that it reads
from (``_read``). docs/cluster.md tells how to run it and why it is exactly-once.
Needs nats-py (the ``cluster`` extra).
"""

from ._client import Connection, JetStreamUnavailable
from ._partition import JetStreamPartition, StaleMark
from ._store import JetStreamSettings, JetStreamStore

__all__ = ["Connection", "JetStreamPartition", "JetStreamSettings", "JetStreamStore",
           "JetStreamUnavailable", "StaleMark"]
