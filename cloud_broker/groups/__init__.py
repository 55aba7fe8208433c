"""Consumer groups: who reads which partitions, and the offsets they committed.

Rooms: ``state`` is the pure state machine of one group (members, generations,
rebalances, assignors, member secrets; no I/O, no clock of its own); ``coordinator``
drives every group on the event loop with a clock and the partition counts and persists
each change before answering; ``store`` is the SQLite database behind it.
"""

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
    "GroupCoordinator",
    "GroupError",
    "GroupState",
    "GroupStore",
    "GroupStoreError",
    "KafkaGroupError",
    "KafkaGroups",
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
