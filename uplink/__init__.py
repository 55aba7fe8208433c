"""The uplink protocol between edge agent and cloud broker, with no I/O.

Strategy: one sans-IO package both sides import, so the agent's httpx client
and the broker's ASGI app are thin adapters and can never disagree on the
bytes or on the exactly-once rules (G3).  The private modules each do one job:
``_types`` (the messages), ``_codec`` (their bytes), ``_positions`` (the state
machine of offsets), ``_errors`` (who is to blame).  Only the names below are
public; tests/uplink/test_exports.py pins them.  See docs/protocol.md.
"""

from ._block import RecordBlock
from ._codec import (
    DEFAULT_MAX_DECOMPRESSED_SIZE,
    WIRE_VERSION,
    decode_ack,
    decode_batch,
    decode_refusal,
    encode_ack,
    encode_batch,
    encode_refusal,
    load_cbor,
)
from ._errors import (
    BodyTooLarge,
    LocalProtocolError,
    MalformedBatch,
    MalformedReply,
    RemoteProtocolError,
    UnsupportedEncoding,
    UplinkError,
)
from ._positions import (
    REFUSAL_RULES,
    RULES,
    Decision,
    DecisionKind,
    RefusalMove,
    SenderState,
    decide,
    reply_for,
)
from ._record import Headers, UplinkRecord
from ._types import (
    MAX_HEADER_NAME_BYTES,
    MAX_HEADERS,
    MAX_OFFSET,
    MAX_TIMESTAMP,
    SAFE_NAME_PATTERN,
    Ack,
    AckStatus,
    Batch,
    Compression,
    Refusal,
    RefusalCode,
    is_safe_name,
)

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "MAX_HEADERS",
    "MAX_HEADER_NAME_BYTES",
    "MAX_OFFSET",
    "MAX_TIMESTAMP",
    "REFUSAL_RULES",
    "RULES",
    "SAFE_NAME_PATTERN",
    "WIRE_VERSION",
    "Ack",
    "AckStatus",
    "Batch",
    "BodyTooLarge",
    "Compression",
    "Decision",
    "DecisionKind",
    "Headers",
    "LocalProtocolError",
    "MalformedBatch",
    "MalformedReply",
    "RecordBlock",
    "Refusal",
    "RefusalCode",
    "RefusalMove",
    "RemoteProtocolError",
    "SenderState",
    "UnsupportedEncoding",
    "UplinkError",
    "UplinkRecord",
    "decide",
    "decode_ack",
    "decode_batch",
    "decode_refusal",
    "encode_ack",
    "encode_batch",
    "encode_refusal",
    "is_safe_name",
    "load_cbor",
    "reply_for",
]
