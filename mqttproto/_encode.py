"""Packets to bytes: ``encode(packet, version)`` for every packet type.

Strategy: each packet type builds its variable header and payload; ``_frame`` adds the
fixed header. MQTT 5 omits what the spec lets it omit (an ack's reason code 0 with no
properties, a DISCONNECT's), as Mosquitto and paho do, so the bytes match theirs. Values
out of range (QoS 3, a string over 65,535 bytes, properties in a 3.1.1 packet) raise
``ValueError``: they are the caller's mistake, not the peer's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._packets import (
    V5,
    V311,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from ._properties import WILL, encode_properties
from ._reasons import connack_return_code
from ._wire import binary, pack_u16, utf8, varint


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def _qos(qos: int) -> int:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS {qos} is not 0, 1 or 2")
    return qos


def _props(props: Any, packet_type: int, version: int) -> bytes:
    if version == V5:
        return encode_properties(props, packet_type)
    if props:
        raise ValueError("MQTT 3.1.1 packets carry no properties")
    return b""


def _connect(p: Connect, version: int) -> bytes:
    level = p.protocol_level
    if level not in (V311, V5):
        raise ValueError(f"protocol level {level} is not 4 or 5")
    flags = 0x02 if p.clean_start else 0
    payload = utf8(p.client_id)
    if p.will is not None:
        w = p.will
        flags |= 0x04 | (_qos(w.qos) << 3) | (0x20 if w.retain else 0)
        payload += _props(w.properties, WILL, level) + utf8(w.topic) + binary(w.payload)
    if p.username is not None:
        flags |= 0x80
        payload += utf8(p.username)
    if p.password is not None:
        flags |= 0x40
        payload += binary(p.password)
    head = utf8("MQTT") + bytes((level, flags)) + pack_u16(p.keepalive)
    return _frame(0x10, head + _props(p.properties, 1, level) + payload)


def _connack(p: Connack, version: int) -> bytes:
    flags = 1 if p.session_present else 0
    if version == V5:
        return _frame(0x20, bytes((flags, p.reason_code)) + encode_properties(p.properties, 2))
    if p.properties:
        raise ValueError("MQTT 3.1.1 packets carry no properties")
    return _frame(0x20, bytes((flags, connack_return_code(p.reason_code))))


def _publish(p: Publish, version: int) -> bytes:
    first = 0x30 | (_qos(p.qos) << 1) | (0x08 if p.dup else 0) | (0x01 if p.retain else 0)
    head = utf8(p.topic)
    if p.qos:
        if not 0 < p.packet_id <= 65535:
            raise ValueError(f"packet identifier {p.packet_id} at QoS {p.qos}")
        head += pack_u16(p.packet_id)
    return _frame(first, head + _props(p.properties, 3, version) + p.payload)


def _ack(first: int, packet_type: int) -> Callable[[Any, int], bytes]:
    def encode_ack(p: Any, version: int) -> bytes:
        body = pack_u16(p.packet_id)
        if version == V5 and (p.reason_code or p.properties):
            body += bytes((p.reason_code,))
            if p.properties:
                body += encode_properties(p.properties, packet_type)
        elif version != V5 and (p.reason_code or p.properties):
            raise ValueError("MQTT 3.1.1 acks carry no reason code or properties")
        return _frame(first, body)
    return encode_ack


def _subscribe(p: Subscribe, version: int) -> bytes:
    body = pack_u16(p.packet_id) + _props(p.properties, 8, version)
    for s in p.subscriptions:
        options = _qos(s.qos)
        if version == V5:
            options |= ((0x04 if s.no_local else 0) | (0x08 if s.retain_as_published else 0)
                        | (s.retain_handling & 0x03) << 4)
        body += utf8(s.topic_filter) + bytes((options,))
    return _frame(0x82, body)


def _suback(p: Suback, version: int) -> bytes:
    return _frame(0x90, pack_u16(p.packet_id) + _props(p.properties, 9, version)
                  + bytes(p.reason_codes))


def _unsubscribe(p: Unsubscribe, version: int) -> bytes:
    body = pack_u16(p.packet_id) + _props(p.properties, 10, version)
    for topic_filter in p.topic_filters:
        body += utf8(topic_filter)
    return _frame(0xA2, body)


def _unsuback(p: Unsuback, version: int) -> bytes:
    body = pack_u16(p.packet_id)
    if version == V5:
        body += encode_properties(p.properties, 11) + bytes(p.reason_codes)
    return _frame(0xB0, body)


def _reason_and_props(first: int, packet_type: int) -> Callable[[Any, int], bytes]:
    def encode_reason(p: Any, version: int) -> bytes:
        if version != V5:
            if p.reason_code or p.properties:
                raise ValueError("MQTT 3.1.1 has no reason code or properties here")
            return bytes((first, 0))
        if not p.reason_code and not p.properties:
            return bytes((first, 0))
        body = bytes((p.reason_code,))
        if p.properties:
            body += encode_properties(p.properties, packet_type)
        return _frame(first, body)
    return encode_reason


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _connect, Connack: _connack, Publish: _publish,
    Puback: _ack(0x40, 4), Pubrec: _ack(0x50, 5), Pubrel: _ack(0x62, 6),
    Pubcomp: _ack(0x70, 7), Subscribe: _subscribe, Suback: _suback,
    Unsubscribe: _unsubscribe, Unsuback: _unsuback,
    Pingreq: lambda p, v: b"\xc0\x00", Pingresp: lambda p, v: b"\xd0\x00",
    Disconnect: _reason_and_props(0xE0, 14), Auth: _reason_and_props(0xF0, 15),
}


def encode(packet: Any, version: int) -> bytes:
    """The bytes of ``packet`` on a connection speaking ``version`` (4 or 5)."""
    if version not in (V311, V5):
        raise ValueError(f"protocol version {version!r} is not 4 or 5")
    if isinstance(packet, Auth) and version != V5:
        raise ValueError("AUTH is an MQTT 5 packet")
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise TypeError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet, version)
