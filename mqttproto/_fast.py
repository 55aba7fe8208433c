"""The hot paths, as bytes: PUBLISH frames with a precomputed topic, and a PUBLISH split.

Strategy: the simulator sends tens of thousands of PUBLISH packets a second from a few
topics per device, so ``topic_field`` encodes a topic once and ``publish_frame`` is a few
concatenations (no ``Publish`` object, no property encoding: it sends none). The agent's
paho-driven ingest gets PUBLISH bodies from paho's own reader; ``split_publish`` takes
topic, packet id and payload from such a body when it has no MQTT 5 properties and says
``None`` otherwise, so the caller falls back to the full decoder (paho's or ``decode``).
Both produce/accept exactly the bytes ``encode``/``decode`` do (tests/mqttproto check it).
"""

from __future__ import annotations

from ._packets import V5
from ._wire import pack_u16, utf8, varint

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
_DUP = 0x08


def topic_field(topic: str) -> bytes:
    """The length-prefixed topic name, precomputed once per device and topic."""
    return utf8(topic)


def publish_frame(topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0,
                  version: int = 4) -> bytes:
    """A PUBLISH with no properties; ``topic`` is a ``topic_field`` (length-prefixed)."""
    head = topic + pack_u16(packet_id) if qos else topic
    if version == V5:
        head += b"\x00"
    return bytes((0x30 | (qos << 1),)) + varint(len(head) + len(payload)) + head + payload


def with_dup(packet: bytes) -> bytes:
    """The same PUBLISH with the DUP flag set, for a QoS 1 resend after a reconnect."""
    return bytes((packet[0] | _DUP,)) + packet[1:]


def split_publish(body: bytes, qos: int, v5: bool) -> tuple[bytes, int, bytes] | None:
    """(topic bytes, packet id, payload) of a PUBLISH body with no MQTT 5 properties; None
    when it has properties or is too short (the caller then uses a full decoder). The
    topic is not checked for UTF-8 or wildcards: the caller does what it needs."""
    n = len(body)
    if n < 2:
        return None
    topic_end = end = 2 + ((body[0] << 8) | body[1])
    mid = 0
    if qos:
        if n < end + 2:
            return None
        mid = (body[end] << 8) | body[end + 1]
        end += 2
    if v5:
        if n <= end or body[end] != 0:  # a non-zero property length: the full decoder
            return None
        end += 1
    elif n < end:
        return None
    return body[2:topic_end], mid, body[end:]
