"""Ingest: edge batches into partitions exactly once (G3), durably (G1), in order (G4).

Rooms: ``ingestor`` applies a batch (position rules from ``uplink.decide``, the
per-partition filter, the durability chain); ``state`` keeps the positions and marks,
checkpoints them and rebuilds them after a crash; ``framing`` turns decoded columns into
one framed batch per partition (the hot loop); ``partitioner`` maps a device key to a
partition (Kafka's murmur2); ``reserved`` names the headers the broker keeps for itself;
``body_decode`` decodes request bodies off the event loop.
"""

from .body_decode import INLINE_BYTES, decode_off_loop, small_enough_inline
from .framing import ORIGIN_HEADER, frame_block
from .ingestor import Ingestor, IngestUnavailable, PositionLimit, RejectedBatch
from .partitioner import partition_for
from .reserved import RESERVED_HEADERS, RESERVED_PREFIX, first_reserved
from .state import STATE_FILE, IngestStats, parse_origin

__all__ = [
    "INLINE_BYTES",
    "ORIGIN_HEADER",
    "RESERVED_HEADERS",
    "RESERVED_PREFIX",
    "STATE_FILE",
    "IngestStats",
    "IngestUnavailable",
    "Ingestor",
    "PositionLimit",
    "RejectedBatch",
    "decode_off_loop",
    "first_reserved",
    "frame_block",
    "parse_origin",
    "partition_for",
    "small_enough_inline",
]
