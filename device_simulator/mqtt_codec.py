"""MQTT 3.1.1 / 5.0 packets a publisher needs, as bytes in and bytes out (no I/O).

Strategy: a device only ever sends CONNECT, PUBLISH, PINGREQ and DISCONNECT
and only ever receives CONNACK, PUBACK and PINGRESP, so this is all of MQTT
the simulator carries.  The hot path is ``publish``: the caller precomputes the
length-prefixed topic once per device (``topic_field``) and the frame is two
concatenations.  With MQTT 5 every packet carries an empty property list; no
feature of 5.0 beyond that is used.  ``PacketReader`` splits a byte stream into
packets; malformed input from the broker raises ``MqttProtocolError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

V311 = 4
V5 = 5

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
_DUP = 0x08
_MAX_REMAINING = 268_435_455

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
    0x80: "unspecified error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x97: "quota exceeded",
}

_pack_h = struct.Struct("!H").pack
_unpack_h = struct.Struct("!H").unpack_from


class MqttProtocolError(Exception):
    """The broker sent bytes that are not a valid MQTT packet for a publisher."""


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (1 to 4 bytes)."""
    if n < 128:
        return bytes((n,))
    if n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n > _MAX_REMAINING:
        raise ValueError(f"remaining length {n} exceeds the MQTT maximum")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def utf8_field(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 65535:
        raise ValueError("MQTT strings are limited to 65535 bytes")
    return _pack_h(len(raw)) + raw


def topic_field(topic: str) -> bytes:
    """The length-prefixed topic name, precomputed once per device and topic."""
    return utf8_field(topic)


def connect(client_id: str, *, keepalive: int = 60, clean: bool = True,
            username: str | None = None, password: str | None = None,
            version: int = V311) -> bytes:
    """A CONNECT packet."""
    flags = 0x02 if clean else 0x00
    payload = utf8_field(client_id)
    if username is not None:
        flags |= 0x80
        payload += utf8_field(username)
    if password is not None:
        flags |= 0x40
        payload += utf8_field(password)
    variable = b"\x00\x04MQTT" + bytes((version, flags)) + _pack_h(keepalive)
    if version == V5:
        variable += b"\x00"  # no properties
    body = variable + payload
    return b"\x10" + varint(len(body)) + body


def publish(topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0,
            version: int = V311) -> bytes:
    """A PUBLISH packet; ``topic`` is a ``topic_field`` (length-prefixed)."""
    head = topic + _pack_h(packet_id) if qos else topic
    if version == V5:
        head += b"\x00"
    return bytes((0x30 | (qos << 1),)) + varint(len(head) + len(payload)) + head + payload


def with_dup(packet: bytes) -> bytes:
    """The same PUBLISH with the DUP flag set, for a QoS 1 resend after a reconnect."""
    return bytes((packet[0] | _DUP,)) + packet[1:]


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int  # 0 = accepted
    receive_maximum: int | None = None  # MQTT 5: QoS 1 messages the broker takes unacked
    server_keepalive: int | None = None  # MQTT 5: keepalive the broker imposes

    @property
    def accepted(self) -> bool:
        return self.reason == 0

    @property
    def reason_text(self) -> str:
        return CONNACK_REASONS.get(self.reason, f"reason code {self.reason:#x}")


# MQTT 5 property id -> value type, for the properties a CONNACK may carry.
_BYTE, _TWO, _FOUR, _UTF8, _PAIR, _BINARY = range(6)
_CONNACK_PROPERTIES = {
    0x11: _FOUR,  # session expiry interval
    0x12: _UTF8,  # assigned client identifier
    0x13: _TWO,  # server keep alive
    0x15: _UTF8,  # authentication method
    0x16: _BINARY,  # authentication data
    0x1A: _UTF8,  # response information
    0x1C: _UTF8,  # server reference
    0x1F: _UTF8,  # reason string
    0x21: _TWO,  # receive maximum
    0x22: _TWO,  # topic alias maximum
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _FOUR,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifiers available
    0x2A: _BYTE,  # shared subscription available
}


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    multiplier = 1
    for _ in range(4):
        if pos >= len(data):
            break
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return value, pos
        multiplier <<= 7
    raise MqttProtocolError("bad variable byte integer in properties")


def parse_properties(data: bytes, pos: int) -> dict[int, int | bytes]:
    """MQTT 5 properties starting at ``pos`` (length first); numbers as int, others raw."""
    length, pos = _read_varint(data, pos)
    end = pos + length
    if end > len(data):
        raise MqttProtocolError("properties run past the packet")
    props: dict[int, int | bytes] = {}
    while pos < end:
        pid = data[pos]
        kind = _CONNACK_PROPERTIES.get(pid)
        pos += 1
        if kind == _BYTE:
            props[pid], pos = data[pos], pos + 1
        elif kind == _TWO:
            props[pid], pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif kind == _FOUR:
            props[pid], pos = int.from_bytes(data[pos:pos + 4], "big"), pos + 4
        elif kind in (_UTF8, _BINARY):
            n = int.from_bytes(data[pos:pos + 2], "big")
            props[pid], pos = data[pos + 2:pos + 2 + n], pos + 2 + n
        elif kind == _PAIR:
            for _ in range(2):
                pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
        else:
            raise MqttProtocolError(f"unknown CONNACK property {pid:#x}")
    if pos != end:
        raise MqttProtocolError("properties do not end where their length says")
    return props


def parse_connack(body: bytes, version: int = V311) -> Connack:
    if len(body) < 2:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes")
    if version != V5 or len(body) == 2:
        return Connack(bool(body[0] & 0x01), body[1])
    props = parse_properties(body, 2)
    receive_max = props.get(0x21)
    keepalive = props.get(0x13)
    return Connack(bool(body[0] & 0x01), body[1],
                   receive_max if isinstance(receive_max, int) else None,
                   keepalive if isinstance(keepalive, int) else None)


def parse_puback(body: bytes) -> tuple[int, int]:
    """(packet id, reason code); MQTT 5 may omit the reason when it is 0 (success)."""
    if len(body) < 2:
        raise MqttProtocolError(f"PUBACK of {len(body)} bytes")
    return _unpack_h(body)[0], body[2] if len(body) > 2 else 0


class PacketReader:
    """Splits received bytes into (packet type, flags, body) tuples."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        packets: list[tuple[int, int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length = 0
            multiplier = 1
            i = pos + 1
            complete = False
            while i < end:
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * multiplier
                if not byte & 0x80:
                    complete = True
                    break
                multiplier <<= 7
                if multiplier > 0x200000:
                    raise MqttProtocolError("remaining length longer than 4 bytes")
            if not complete or end - i < length:
                break  # wait for the rest of the packet
            packets.append((first >> 4, first & 0x0F, bytes(buf[i:i + length])))
            pos = i + length
        if pos:
            del buf[:pos]
        return packets
