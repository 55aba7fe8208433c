"""Bytes to packets: ``decode(first_byte, body, version)`` for every packet type.

Strategy: one function per packet type, looked up by the type nibble; each reads the body
with the bounds-checked readers of ``_wire`` and must end exactly where the body ends
(trailing bytes are MALFORMED_PACKET). ``version`` is the connection's protocol level
(4 or 5, known from its CONNECT); CONNECT carries its own. The fixed header's flags are
checked per type (spec 2.1.3) first. Everything a peer can get wrong raises
``MqttProtocolError`` with the reason code to answer; see ``_errors``.

``decode_publish`` takes ``(data, pos, end)`` so ``PacketReader`` decodes PUBLISH, the one
packet on the hot path, straight from its receive buffer without copying the body first.
"""

from __future__ import annotations

from collections.abc import Callable

from ._errors import MqttProtocolError
from ._packets import (
    AUTH,
    CONNACK,
    CONNECT,
    PUBLISH,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    V5,
    V311,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from ._properties import WILL, Properties, Property, read_properties
from ._reasons import ALLOWED, CONNACK_V311_TO_V5, SUBACK_V311
from ._wire import (
    MALFORMED,
    PROTOCOL,
    read_binary,
    read_str,
    read_u8,
    read_u16,
    to_text,
)

TOPIC_NAME_INVALID = 0x90
UNSUPPORTED_PROTOCOL_VERSION = 0x84
_TOPIC_ALIAS = Property.TOPIC_ALIAS
_NO_PROPS: Properties = {}


def _end(pos: int, end: int, name: str) -> None:
    if pos != end:
        raise MqttProtocolError(MALFORMED, f"{name} has {end - pos} bytes past its end")


def _packet_id(data: bytes, pos: int, end: int) -> tuple[int, int]:
    pid, pos = read_u16(data, pos, end)
    if not pid:
        raise MqttProtocolError(PROTOCOL, "packet identifier 0")
    return pid, pos


def _reason(code: int, packet_type: int) -> int:
    if code not in ALLOWED[packet_type]:
        raise MqttProtocolError(PROTOCOL, f"reason code {code:#04x} is not valid in "
                                          f"packet type {packet_type}")
    return code


def check_topic_name(topic: str) -> None:
    if "+" in topic or "#" in topic:
        raise MqttProtocolError(TOPIC_NAME_INVALID, f"topic name {topic!r} has a wildcard")


def decode_publish(first: int, data: bytes, pos: int, end: int, version: int) -> Publish:
    """The PUBLISH whose body is ``data[pos:end]``."""
    topic, payload, qos, packet_id, props, first = publish_fields(first, data, pos, end,
                                                                  version)
    return Publish(topic, payload, qos, bool(first & 0x01), bool(first & 0x08), packet_id,
                   props if props is not _NO_PROPS else {})


#: a PUBLISH as ``PacketReader(fields=True)`` returns it: (topic, payload, qos, packet id,
#: properties, first byte of the fixed header: retain 0x01, dup 0x08). The properties of
#: a PUBLISH with none are one shared empty mapping: read it, never change it.
PublishFields = tuple[str, bytes, int, int, Properties, int]


def publish_fields(first: int, data: bytes, pos: int, end: int, version: int
                   ) -> PublishFields:
    """``decode_publish`` as a plain tuple: the same checks, no object per packet (a frozen
    dataclass pays a ``__setattr__`` per field, a third of a server's cost per PUBLISH)."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MqttProtocolError(MALFORMED, "PUBLISH with QoS 3")
    if pos + 2 > end:
        raise MqttProtocolError(MALFORMED, "PUBLISH too short for its topic length")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise MqttProtocolError(MALFORMED, "PUBLISH topic runs past the packet")
    raw = data[pos + 2:stop]
    try:
        topic = raw.decode()
    except UnicodeDecodeError:
        topic = to_text(bytes(raw), "topic name")  # raises the protocol error
    if "\x00" in topic or "+" in topic or "#" in topic:
        to_text(bytes(raw), "topic name")
        check_topic_name(topic)
    pos = stop
    packet_id = 0
    if qos:
        if pos + 2 > end:
            raise MqttProtocolError(MALFORMED, "PUBLISH too short for its packet identifier")
        packet_id = (data[pos] << 8) | data[pos + 1]
        if not packet_id:
            raise MqttProtocolError(PROTOCOL, "PUBLISH at QoS > 0 with packet identifier 0")
        pos += 2
    props = _NO_PROPS
    if version == V5:
        if pos < end and data[pos] == 0:
            pos += 1
        else:
            props, pos = read_properties(data, pos, end, PUBLISH)
        if not topic and _TOPIC_ALIAS not in props:
            raise MqttProtocolError(PROTOCOL, "PUBLISH with an empty topic and no alias")
    elif not topic:
        raise MqttProtocolError(PROTOCOL, "PUBLISH with an empty topic")
    return topic, bytes(data[pos:end]), qos, packet_id, props, first


def _connect(first: int, data: bytes, end: int, version: int) -> Connect:
    name, pos = read_str(data, 0, end, "protocol name")
    level, pos = read_u8(data, pos, end)
    if name != "MQTT" or level not in (V311, V5):
        raise MqttProtocolError(UNSUPPORTED_PROTOCOL_VERSION,
                                f"protocol {name!r} level {level} is not MQTT 3.1.1 or 5")
    flags, pos = read_u8(data, pos, end)
    if flags & 0x01:
        raise MqttProtocolError(MALFORMED, "CONNECT reserved flag set")
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 0x03
    if will_qos == 3 or (not will_flag and flags & 0x38):
        raise MqttProtocolError(MALFORMED, "CONNECT will QoS/retain flags invalid")
    if level == V311 and flags & 0x40 and not flags & 0x80:
        raise MqttProtocolError(MALFORMED, "CONNECT password flag without user name flag")
    keepalive, pos = read_u16(data, pos, end)
    props: Properties = {}
    if level == V5:
        props, pos = read_properties(data, pos, end, CONNECT)
    client_id, pos = read_str(data, pos, end, "client identifier")
    will = None
    if will_flag:
        will_props: Properties = {}
        if level == V5:
            will_props, pos = read_properties(data, pos, end, WILL)
        will_topic, pos = read_str(data, pos, end, "will topic")
        if not will_topic:
            raise MqttProtocolError(PROTOCOL, "CONNECT with an empty will topic")
        check_topic_name(will_topic)
        will_payload, pos = read_binary(data, pos, end)
        will = Will(will_topic, will_payload, will_qos, bool(flags & 0x20), will_props)
    username = password = None
    if flags & 0x80:
        username, pos = read_str(data, pos, end, "user name")
    if flags & 0x40:
        password, pos = read_binary(data, pos, end)
    _end(pos, end, "CONNECT")
    return Connect(level, client_id, bool(flags & 0x02), keepalive, username, password,
                   will, props)


def _connack(first: int, data: bytes, end: int, version: int) -> Connack:
    flags, pos = read_u8(data, 0, end)
    if flags & 0xFE:
        raise MqttProtocolError(MALFORMED, "CONNACK reserved flags set")
    code, pos = read_u8(data, pos, end)
    props: Properties = {}
    if version == V5:
        _reason(code, CONNACK)
        props, pos = read_properties(data, pos, end, CONNACK)
    else:
        if code not in CONNACK_V311_TO_V5:
            raise MqttProtocolError(MALFORMED, f"CONNACK return code {code} is reserved")
        code = CONNACK_V311_TO_V5[code]
    _end(pos, end, "CONNACK")
    return Connack(bool(flags), code, props)


def _ack(cls: type, packet_type: int) -> Callable[[int, bytes, int, int], Packet]:
    def decode_ack(first: int, data: bytes, end: int, version: int) -> Packet:
        pid, pos = _packet_id(data, 0, end)
        code = 0
        props: Properties = {}
        if version == V5 and pos < end:
            code = _reason(data[pos], packet_type)
            pos += 1
            if pos < end:
                props, pos = read_properties(data, pos, end, packet_type)
        _end(pos, end, cls.__name__.upper())
        return cls(pid, code, props)
    return decode_ack


def _subscribe(first: int, data: bytes, end: int, version: int) -> Subscribe:
    pid, pos = _packet_id(data, 0, end)
    props: Properties = {}
    if version == V5:
        props, pos = read_properties(data, pos, end, SUBSCRIBE)
    subs = []
    reserved = 0xC0 if version == V5 else 0xFC
    while pos < end:
        topic_filter, pos = read_str(data, pos, end, "topic filter")
        options, pos = read_u8(data, pos, end)
        if options & reserved or options & 0x03 == 3:
            raise MqttProtocolError(MALFORMED, f"subscription options {options:#04x}")
        if (options >> 4) & 0x03 == 3:
            raise MqttProtocolError(PROTOCOL, "retain handling 3")
        subs.append(Subscription(topic_filter, options & 0x03, bool(options & 0x04),
                                 bool(options & 0x08), (options >> 4) & 0x03))
    if not subs:
        raise MqttProtocolError(PROTOCOL, "SUBSCRIBE with no topic filter")
    return Subscribe(pid, tuple(subs), props)


def _suback(first: int, data: bytes, end: int, version: int) -> Suback:
    pid, pos = _packet_id(data, 0, end)
    props: Properties = {}
    allowed = SUBACK_V311
    if version == V5:
        props, pos = read_properties(data, pos, end, SUBACK)
        allowed = ALLOWED[SUBACK]
    codes = tuple(data[pos:end])
    if not codes or not allowed.issuperset(codes):
        raise MqttProtocolError(PROTOCOL, f"SUBACK reason codes {codes}")
    return Suback(pid, codes, props)


def _unsubscribe(first: int, data: bytes, end: int, version: int) -> Unsubscribe:
    pid, pos = _packet_id(data, 0, end)
    props: Properties = {}
    if version == V5:
        props, pos = read_properties(data, pos, end, UNSUBSCRIBE)
    filters = []
    while pos < end:
        topic_filter, pos = read_str(data, pos, end, "topic filter")
        filters.append(topic_filter)
    if not filters:
        raise MqttProtocolError(PROTOCOL, "UNSUBSCRIBE with no topic filter")
    return Unsubscribe(pid, tuple(filters), props)


def _unsuback(first: int, data: bytes, end: int, version: int) -> Unsuback:
    pid, pos = _packet_id(data, 0, end)
    if version != V5:
        _end(pos, end, "UNSUBACK")
        return Unsuback(pid)
    props, pos = read_properties(data, pos, end, UNSUBACK)
    codes = tuple(data[pos:end])
    if not ALLOWED[UNSUBACK].issuperset(codes):
        raise MqttProtocolError(PROTOCOL, f"UNSUBACK reason codes {codes}")
    return Unsuback(pid, codes, props)


def _empty(cls: type) -> Callable[[int, bytes, int, int], Packet]:
    instance = cls()

    def decode_empty(first: int, data: bytes, end: int, version: int) -> Packet:
        _end(0, end, cls.__name__.upper())
        return instance
    return decode_empty


def _reason_and_props(cls: type, packet_type: int) -> Callable[[int, bytes, int, int], Packet]:
    def decode_reason(first: int, data: bytes, end: int, version: int) -> Packet:
        if version != V5:
            if packet_type == AUTH:
                raise MqttProtocolError(MALFORMED, "AUTH is not an MQTT 3.1.1 packet")
            _end(0, end, cls.__name__.upper())
            return cls()
        if not end:
            return cls()
        code = _reason(data[0], packet_type)
        props: Properties = {}
        if end > 1:
            props, pos = read_properties(data, 1, end, packet_type)
            _end(pos, end, cls.__name__.upper())
        return cls(code, props)
    return decode_reason


def _publish(first: int, data: bytes, end: int, version: int) -> Publish:
    return decode_publish(first, data, 0, end, version)


_DECODERS: dict[int, Callable[[int, bytes, int, int], Packet]] = {
    1: _connect, 2: _connack, 3: _publish,
    4: _ack(Puback, 4), 5: _ack(Pubrec, 5), 6: _ack(Pubrel, 6), 7: _ack(Pubcomp, 7),
    8: _subscribe, 9: _suback, 10: _unsubscribe, 11: _unsuback,
    12: _empty(Pingreq), 13: _empty(Pingresp),
    14: _reason_and_props(Disconnect, 14), 15: _reason_and_props(Auth, AUTH),
}
#: fixed-header flags each type must carry (PUBLISH: any but QoS 3, checked there)
_FLAGS = {PUBREL: 0x02, SUBSCRIBE: 0x02, UNSUBSCRIBE: 0x02}


def check_first_byte(first: int) -> int:
    """The packet type of fixed-header byte ``first``; raises when type or flags are bad."""
    ptype = first >> 4
    if ptype == 0:
        raise MqttProtocolError(MALFORMED, "packet type 0 is reserved")
    if ptype != PUBLISH and first & 0x0F != _FLAGS.get(ptype, 0):
        raise MqttProtocolError(MALFORMED, f"fixed header flags {first & 0x0F:#x} are "
                                           f"invalid for packet type {ptype}")
    return ptype


def decode(first_byte: int, body: bytes, version: int) -> Packet:
    """The packet of fixed-header byte ``first_byte`` and ``body`` (after the remaining
    length) on a connection speaking ``version`` (4 or 5)."""
    ptype = check_first_byte(first_byte)
    if ptype == CONNECT:
        return _connect(first_byte, body, len(body), version)
    if version not in (V311, V5):
        raise ValueError(f"protocol version {version!r} is not 4 or 5")
    return _DECODERS[ptype](first_byte, body, len(body), version)
