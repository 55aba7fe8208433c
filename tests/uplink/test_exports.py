"""The public surface of ``uplink`` is exactly these names; changing it is a decision."""

from __future__ import annotations

import uplink

EXPORTED = [
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


def test_all_is_pinned() -> None:
    assert sorted(uplink.__all__) == sorted(EXPORTED)
    assert len(set(uplink.__all__)) == len(uplink.__all__)


def test_every_exported_name_exists() -> None:
    for name in uplink.__all__:
        assert hasattr(uplink, name), name


def test_nothing_public_outside_all() -> None:
    public = {
        name
        for name in vars(uplink)
        if not name.startswith("_") and not isinstance(getattr(uplink, name), type(uplink))
    }
    assert public == set(uplink.__all__)


def test_error_tree() -> None:
    assert issubclass(uplink.LocalProtocolError, uplink.UplinkError)
    assert issubclass(uplink.RemoteProtocolError, uplink.UplinkError)
    assert issubclass(uplink.MalformedBatch, uplink.RemoteProtocolError)
    assert issubclass(uplink.BodyTooLarge, uplink.MalformedBatch)
    assert issubclass(uplink.UnsupportedEncoding, uplink.MalformedBatch)
    assert issubclass(uplink.MalformedReply, uplink.RemoteProtocolError)
    assert not issubclass(uplink.MalformedReply, uplink.MalformedBatch)
