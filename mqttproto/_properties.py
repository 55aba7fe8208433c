"""MQTT 5 properties: which exist, their types, which packet may carry them, their bytes.

Strategy: one table (``SPEC``: id -> type and the packets allowed to carry it, spec
section 2.2.2.2) drives both directions. A decoded property list is a ``dict`` keyed by
``Property`` (an ``IntEnum``: plain ints work as keys too). Values are ``int``, ``str``
or ``bytes``; the two properties that may repeat are lists: ``USER_PROPERTY`` as
``[(name, value), ...]`` in order, ``SUBSCRIPTION_IDENTIFIER`` as ``[int, ...]``.

Received property lists are checked: an id unknown or not allowed in the packet, or a
value that runs short, is MALFORMED_PACKET; a property that may appear once appearing
twice, or a value the spec forbids (a receive maximum of 0, a boolean of 2), is
PROTOCOL_ERROR. Bound: at most ``MAX_USER_PROPERTIES`` user properties per packet
(IMPLEMENTATION_SPECIFIC_ERROR beyond), so a packet of n bytes never builds more than a
few hundred Python objects, whatever n is.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from ._errors import MqttProtocolError
from ._wire import (
    MALFORMED,
    PROTOCOL,
    binary,
    pack_u16,
    pack_u32,
    read_binary,
    read_str,
    read_u16,
    read_u32,
    read_varint,
    utf8,
    varint,
)

#: user properties accepted in one packet (an implementation limit, see the docstring)
MAX_USER_PROPERTIES = 256
IMPLEMENTATION_SPECIFIC = 0x83

#: the "packet" that carries a will's properties inside CONNECT
WILL = 0


class Property(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


BYTE, BOOL, U16, NONZERO_U16, U32, NONZERO_U32, VARINT, UTF8, BINARY, PAIR = range(10)
_CONNECT, _CONNACK, _PUBLISH, _DISCONNECT, _AUTH, _SUBSCRIBE = 1, 2, 3, 14, 15, 8
_ACKS = (4, 5, 6, 7, 9, 11)

#: id -> (value type, packet types that may carry it; WILL = a will's properties)
SPEC: dict[int, tuple[int, frozenset[int]]] = {
    0x01: (BOOL, frozenset({_PUBLISH, WILL})),
    0x02: (U32, frozenset({_PUBLISH, WILL})),
    0x03: (UTF8, frozenset({_PUBLISH, WILL})),
    0x08: (UTF8, frozenset({_PUBLISH, WILL})),
    0x09: (BINARY, frozenset({_PUBLISH, WILL})),
    0x0B: (VARINT, frozenset({_PUBLISH, _SUBSCRIBE})),
    0x11: (U32, frozenset({_CONNECT, _CONNACK, _DISCONNECT})),
    0x12: (UTF8, frozenset({_CONNACK})),
    0x13: (U16, frozenset({_CONNACK})),
    0x15: (UTF8, frozenset({_CONNECT, _CONNACK, _AUTH})),
    0x16: (BINARY, frozenset({_CONNECT, _CONNACK, _AUTH})),
    0x17: (BOOL, frozenset({_CONNECT})),
    0x18: (U32, frozenset({WILL})),
    0x19: (BOOL, frozenset({_CONNECT})),
    0x1A: (UTF8, frozenset({_CONNACK})),
    0x1C: (UTF8, frozenset({_CONNACK, _DISCONNECT})),
    0x1F: (UTF8, frozenset({_CONNACK, _DISCONNECT, _AUTH, *_ACKS})),
    0x21: (NONZERO_U16, frozenset({_CONNECT, _CONNACK})),
    0x22: (U16, frozenset({_CONNECT, _CONNACK})),
    0x23: (NONZERO_U16, frozenset({_PUBLISH})),
    0x24: (BOOL, frozenset({_CONNACK})),
    0x25: (BOOL, frozenset({_CONNACK})),
    0x26: (PAIR, frozenset({_CONNECT, _CONNACK, _PUBLISH, WILL, _SUBSCRIBE, 10,
                            _DISCONNECT, _AUTH, *_ACKS})),
    0x27: (NONZERO_U32, frozenset({_CONNECT, _CONNACK})),
    0x28: (BOOL, frozenset({_CONNACK})),
    0x29: (BOOL, frozenset({_CONNACK})),
    0x2A: (BOOL, frozenset({_CONNACK})),
}
_PROPS = {int(p): p for p in Property}

Properties = dict[int, Any]


def _repeats(pid: int, packet_type: int) -> bool:
    return pid == 0x26 or (pid == 0x0B and packet_type == _PUBLISH)


def read_properties(data: bytes, pos: int, end: int, packet_type: int
                    ) -> tuple[Properties, int]:
    """The property list at ``pos`` (its length first) of a ``packet_type`` packet."""
    length, pos = read_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise MqttProtocolError(MALFORMED, "property length runs past the packet")
    props: Properties = {}
    if not length:
        return props, pos
    pairs = 0
    while pos < stop:
        pid, pos = read_varint(data, pos, stop)
        spec = SPEC.get(pid)
        if spec is None or packet_type not in spec[1]:
            raise MqttProtocolError(MALFORMED, f"property {pid:#04x} not allowed here")
        kind = spec[0]
        value: Any
        if kind == UTF8:
            value, pos = read_str(data, pos, stop, "a property")
        elif kind in (U32, NONZERO_U32):
            value, pos = read_u32(data, pos, stop)
        elif kind in (U16, NONZERO_U16):
            value, pos = read_u16(data, pos, stop)
        elif kind == BOOL:
            if pos >= stop:
                raise MqttProtocolError(MALFORMED, "property runs past its list")
            value = data[pos]
            pos += 1
            if value > 1:
                raise MqttProtocolError(PROTOCOL, f"property {pid:#04x} must be 0 or 1")
        elif kind == BINARY:
            value, pos = read_binary(data, pos, stop)
        elif kind == VARINT:
            value, pos = read_varint(data, pos, stop)
        else:  # PAIR
            pairs += 1
            if pairs > MAX_USER_PROPERTIES:
                raise MqttProtocolError(IMPLEMENTATION_SPECIFIC,
                                        f"more than {MAX_USER_PROPERTIES} user properties")
            name, pos = read_str(data, pos, stop, "a user property")
            text, pos = read_str(data, pos, stop, "a user property")
            value = (name, text)
        if not value and kind in (NONZERO_U16, NONZERO_U32, VARINT):
            raise MqttProtocolError(PROTOCOL, f"property {pid:#04x} must not be 0")
        key = _PROPS[pid]
        if _repeats(pid, packet_type):
            props.setdefault(key, []).append(value)
        elif key in props:
            raise MqttProtocolError(PROTOCOL, f"property {pid:#04x} appears twice")
        else:
            props[key] = value
    return props, pos


def _encode_value(kind: int, value: Any) -> bytes:
    if kind == UTF8:
        return utf8(value)
    if kind in (U32, NONZERO_U32):
        return pack_u32(value)
    if kind in (U16, NONZERO_U16):
        return pack_u16(value)
    if kind in (BOOL, BYTE):
        return bytes((value,))
    if kind == BINARY:
        return binary(bytes(value))
    if kind == VARINT:
        return varint(value)
    name, text = value
    return utf8(name) + utf8(text)


def encode_properties(props: Properties | None, packet_type: int) -> bytes:
    """The property list with its length; ``b"\\x00"`` when there is none."""
    if not props:
        return b"\x00"
    out = bytearray()
    for pid, value in props.items():
        spec = SPEC.get(int(pid))
        if spec is None or packet_type not in spec[1]:
            raise ValueError(f"property {pid!r} is not allowed in packet type {packet_type}")
        kind = spec[0]
        head = varint(int(pid))
        values = value if _repeats(int(pid), packet_type) or kind == PAIR else [value]
        for v in values:
            out += head
            out += _encode_value(kind, v)
    return varint(len(out)) + bytes(out)
