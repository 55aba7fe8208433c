"""Consumer groups: who reads which partitions, and the offsets they committed.

Rooms: ``state`` is the pure state machine of one group (members, generations,
rebalances, assignors, member secrets; no I/O, no clock of its own); ``coordinator``
drives every group on the event loop with a clock and the partition counts, deciding
each change as a compare-and-set on the group's record in a ``backend``: SQLite for one
process (``LocalGroupBackend`` over ``store``), or a JetStream key-value bucket shared by
the broker nodes of a cluster (``kv_backend.KvGroupBackend``, imported only in cluster
mode: it needs nats-py).
"""

from .backend import GroupBackend, GroupConflict, LocalGroupBackend
from .coordinator import MAX_JOIN_WAIT_S, GroupCoordinator, UnknownGroup
from .kafka_group import KafkaGroupError, KafkaGroups
from .state import (
    ASSIGNORS,
    MAX_SESSION_MS,
    MIN_SESSION_MS,
    AssignorMismatch,
    Group,
    GroupActive,
    GroupError,
    GroupState,
    MemberInUse,
    NotAssigned,
    RebalanceInProgress,
    StaleGeneration,
    TopicPartition,
    UnknownMember,
    assign_range,
    assign_round_robin,
)
from .store import GroupStore, GroupStoreError

__all__ = [
    "ASSIGNORS",
    "MAX_JOIN_WAIT_S",
    "MAX_SESSION_MS",
    "MIN_SESSION_MS",
    "AssignorMismatch",
    "Group",
    "GroupActive",
    "GroupBackend",
    "GroupConflict",
    "GroupCoordinator",
    "GroupError",
    "GroupState",
    "GroupStore",
    "GroupStoreError",
    "KafkaGroupError",
    "KafkaGroups",
    "LocalGroupBackend",
    "MemberInUse",
    "NotAssigned",
    "RebalanceInProgress",
    "StaleGeneration",
    "TopicPartition",
    "UnknownGroup",
    "UnknownMember",
    "assign_range",
    "assign_round_robin",
]
