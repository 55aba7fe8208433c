"""Hostile bytes: whatever arrives, ``MqttProtocolError`` with a reason code or a packet,
never another exception, and a reader that never holds more than its limit."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_strategies import packets, split_frame

import mqttproto as m

LIMIT = 4096
VERSIONS = [m.V311, m.V5]


def _decode_or_refuse(first: int, body: bytes, version: int) -> Any:
    try:
        return m.decode(first, body, version)
    except m.MqttProtocolError as exc:
        assert exc.reason_code >= 0x80, exc
        return exc


def _feed_or_refuse(reader: m.PacketReader, data: bytes) -> list[Any] | m.MqttProtocolError:
    try:
        out = reader.feed(data)
    except m.MqttProtocolError as exc:
        assert exc.reason_code >= 0x80, exc
        return exc
    assert reader.buffered() <= max(reader.max_packet_size, 5)
    return out


@pytest.mark.parametrize("version", VERSIONS)
@given(first=st.integers(0, 255), body=st.binary(max_size=64))
def test_every_first_byte_and_any_body(version: int, first: int, body: bytes) -> None:
    _decode_or_refuse(first, body, version)


@pytest.mark.parametrize("version", [None, m.V311, m.V5])
@given(stream=st.binary(max_size=300), chunk=st.integers(1, 50))
def test_random_streams_into_a_reader(version: int | None, stream: bytes, chunk: int) -> None:
    reader = m.PacketReader(64, version)
    for i in range(0, len(stream), chunk):
        if isinstance(_feed_or_refuse(reader, stream[i:i + chunk]), m.MqttProtocolError):
            return


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
def test_truncated_and_mutated_packets(version: int, data: st.DataObject) -> None:
    first, body = split_frame(m.encode(data.draw(packets(version)), version))
    cut = data.draw(st.integers(0, len(body)))
    _decode_or_refuse(first, body[:cut], version)
    if body:
        i = data.draw(st.integers(0, len(body) - 1))
        mutated = body[:i] + bytes([data.draw(st.integers(0, 255))]) + body[i + 1:]
        _decode_or_refuse(first, mutated, version)
    _decode_or_refuse(first, body + data.draw(st.binary(min_size=1, max_size=4)), version)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=50)
@given(data=st.data())
def test_a_stream_cut_short_keeps_only_the_incomplete_packet(version: int,
                                                             data: st.DataObject) -> None:
    sent = [p for p in data.draw(st.lists(packets(version), min_size=1, max_size=4))
            if not isinstance(p, m.Connect)]
    stream = b"".join(m.encode(p, version) for p in sent)
    cut = data.draw(st.integers(0, len(stream)))
    reader = m.PacketReader(max(len(stream), 5), version)
    got = reader.feed(stream[:cut])
    assert got == sent[:len(got)]
    assert reader.buffered() == cut - sum(len(m.encode(p, version)) for p in got)


@pytest.mark.parametrize("header", [
    b"\x30\xff\xff\xff\xff\x01",  # a fifth remaining-length byte
    b"\x30\x80\x80\x80\x80",
])
def test_a_remaining_length_over_four_bytes_is_malformed(header: bytes) -> None:
    with pytest.raises(m.MqttProtocolError) as err:
        m.PacketReader(LIMIT, m.V311).feed(header)
    assert err.value.reason_code == m.ReasonCode.MALFORMED_PACKET


@pytest.mark.parametrize("declared", [LIMIT - 1, LIMIT + 100, 268_435_455])
def test_a_huge_declared_length_is_refused_before_its_body_is_buffered(declared: int) -> None:
    reader = m.PacketReader(LIMIT, m.V311)
    header = b"\x30" + m._wire.varint(declared)
    with pytest.raises(m.MqttProtocolError) as err:
        reader.feed(header)
    assert err.value.reason_code == m.ReasonCode.PACKET_TOO_LARGE
    assert reader.buffered() == 0


def test_a_packet_exactly_at_the_limit_is_taken() -> None:
    topic = m.topic_field("t")
    frame = m.publish_frame(topic, b"x" * (LIMIT - 3 - len(topic)), 0)
    assert len(frame) == LIMIT
    reader = m.PacketReader(LIMIT, m.V311)
    assert [p.payload for p in reader.feed(frame)] == [frame[3 + len(topic):]]


def test_a_slow_drip_holds_at_most_one_packet() -> None:
    reader = m.PacketReader(LIMIT, m.V311)
    frame = m.publish_frame(m.topic_field("t"), b"x" * (LIMIT - 6), 0)
    for i, byte in enumerate(frame[:-1]):
        assert reader.feed(bytes([byte])) == []
        assert reader.buffered() == i + 1
    assert len(reader.feed(frame[-1:])) == 1 and reader.buffered() == 0


def test_memory_stays_bounded_under_a_flood_of_incomplete_packets() -> None:
    """1 MiB offered in 1 KiB chunks to readers limited to 4 KiB: each holds <= 4 KiB."""
    readers = [m.PacketReader(LIMIT, m.V311) for _ in range(10)]
    header = b"\x30" + m._wire.varint(LIMIT - 4) + b"\x00\x01t"  # a PUBLISH to topic "t"
    tracemalloc.start()
    try:
        for r in readers:
            r.feed(header)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            for r in readers:
                if r.buffered() + 1024 >= LIMIT - 1:  # the packet is LIMIT - 1 bytes
                    assert len(r.feed(b"x" * (LIMIT - 1 - r.buffered()))) == 1
                    r.feed(header)
                else:
                    assert r.feed(b"x" * 1024) == []
                assert r.buffered() <= LIMIT
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 10 * (LIMIT + 1024)


@pytest.mark.parametrize(("body", "version", "code"), [
    (b"\x00\x02\xc3\x28", m.V311, 0x81),  # topic: invalid UTF-8
    (b"\x00\x02\xed\xa0", m.V311, 0x81),  # a truncated surrogate
    (b"\x00\x01\x00", m.V311, 0x81),  # U+0000
    (b"\x00\x01+", m.V311, 0x90),  # a wildcard in a topic name
    (b"\x00\x00", m.V311, 0x82),  # an empty topic
    (b"\x00\x00\x00", m.V5, 0x82),  # an empty topic without an alias
    (b"\x00\x01t\x03\x26\x00\x01", m.V5, 0x81),  # user property cut short
    (b"\x00\x01t\x05\x23\x00\x01\x23\x00", m.V5, 0x81),  # property past its list
    (b"\x00\x01t\x06\x23\x00\x01\x23\x00\x02", m.V5, 0x82),  # topic alias twice
    (b"\x00\x01t\x03\x23\x00\x00", m.V5, 0x82),  # topic alias 0
    (b"\x00\x01t\x02\x01\x02", m.V5, 0x82),  # payload format indicator 2
    (b"\x00\x01t\x02\x11\x00", m.V5, 0x81),  # session expiry: not a PUBLISH property
    (b"\x00\x01t\x02\x7f\x00", m.V5, 0x81),  # unknown property
    (b"\x00\x01t\xff\xff\xff\xff\x7f", m.V5, 0x81),  # property length over 4 bytes
    (b"\x00\x01t\xff\xff\xff\x7f", m.V5, 0x81),  # property length past the packet
])
def test_bad_publish_bodies(body: bytes, version: int, code: int) -> None:
    with pytest.raises(m.MqttProtocolError) as err:
        m.decode(0x30, body, version)
    assert err.value.reason_code == code


def _connect_body(client_id: bytes, flags: int = 0x02, level: int = 4,
                  name: bytes = b"MQTT") -> bytes:
    props = b"\x00" if level == 5 else b""
    return (len(name).to_bytes(2, "big") + name + bytes([level, flags]) + b"\x00\x3c" + props
            + len(client_id).to_bytes(2, "big") + client_id)


@pytest.mark.parametrize(("body", "code"), [
    (_connect_body(b"\xff"), 0x81),  # client id: invalid UTF-8
    (_connect_body(b"a", flags=0x03), 0x81),  # reserved flag
    (_connect_body(b"a", flags=0x1E), 0x81),  # will QoS 3
    (_connect_body(b"a", flags=0x22), 0x81),  # will retain without a will
    (_connect_body(b"a", flags=0x42), 0x81),  # 3.1.1: password without user name
    (_connect_body(b"a", level=3), 0x84),
    (_connect_body(b"a", level=3, name=b"MQIsdp"), 0x84),
    (_connect_body(b"a", level=6), 0x84),
    (_connect_body(b"a") + b"\x00", 0x81),  # trailing bytes
])
def test_bad_connect_bodies(body: bytes, code: int) -> None:
    with pytest.raises(m.MqttProtocolError) as err:
        m.PacketReader(LIMIT).feed(b"\x10" + m._wire.varint(len(body)) + body)
    assert err.value.reason_code == code


def _user_properties(n: int, size: int = 0) -> dict[int, Any]:
    return {m.Property.USER_PROPERTY: [("k" * size, "v")] * n}


def test_a_property_bomb_is_refused_with_an_implementation_limit() -> None:
    ok = m.Publish("t", b"", properties=_user_properties(m.MAX_USER_PROPERTIES))
    assert m.decode(*split_frame(m.encode(ok, m.V5)), m.V5) == ok
    bomb = m.encode(m.Publish("t", properties=_user_properties(m.MAX_USER_PROPERTIES + 1)),
                    m.V5)
    with pytest.raises(m.MqttProtocolError) as err:
        m.PacketReader(version=m.V5).feed(bomb)
    assert err.value.reason_code == m.ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR


def test_huge_properties_are_bounded_by_the_packet_limit() -> None:
    big = m.encode(m.Publish("t", properties=_user_properties(1, 60_000)), m.V5)
    with pytest.raises(m.MqttProtocolError) as err:
        m.PacketReader(LIMIT, m.V5).feed(big)
    assert err.value.reason_code == m.ReasonCode.PACKET_TOO_LARGE


@pytest.mark.parametrize(("first", "body", "version"), [
    (0x00, b"", m.V5),  # reserved type 0
    (0xF0, b"", m.V311),  # AUTH in 3.1.1
    (0x60, b"\x00\x01", m.V311),  # PUBREL must carry flags 0b0010
    (0x80, b"\x00\x01\x00\x01a\x00", m.V311),  # SUBSCRIBE likewise
    (0x36, b"\x00\x01t\x00\x01", m.V311),  # PUBLISH QoS 3
    (0x40, b"\x00\x00", m.V311),  # packet id 0
    (0x40, b"\x00\x01\x05", m.V5),  # PUBACK reason 0x05
    (0x82, b"\x00\x01", m.V311),  # SUBSCRIBE with no filter
    (0x82, b"\x00\x01\x00\x01a\x04", m.V311),  # 3.1.1 reserved option bit
    (0x82, b"\x00\x01\x00\x00\x01a\x30", m.V5),  # retain handling 3
    (0x90, b"\x00\x01\x03", m.V311),  # SUBACK return code 3
    (0x20, b"\x00\x06", m.V311),  # CONNACK return code 6
    (0x20, b"\x02\x00", m.V311),  # CONNACK reserved flags
    (0xC0, b"\x00", m.V311),  # PINGREQ with a body
    (0xE0, b"\x00", m.V311),  # DISCONNECT with a body in 3.1.1
])
def test_bad_headers_and_fields(first: int, body: bytes, version: int) -> None:
    with pytest.raises(m.MqttProtocolError) as err:
        m.decode(first, body, version)
    assert err.value.reason_code >= 0x80


def test_a_large_packet_dripped_byte_by_byte_costs_linear_time() -> None:
    """Each feed of an incomplete packet appends, nothing is re-parsed or copied whole: 256
    KiB in 1-byte reads takes well under a second (copying the buffer on every read would
    move 32 GB)."""
    size = 256 * 1024
    frame = m.publish_frame(m.topic_field("t"), b"x" * (size - 7), 0)
    reader = m.PacketReader(size, m.V311)
    feed = reader.feed
    started = time.process_time()
    for i in range(len(frame) - 1):
        feed(frame[i:i + 1])
    assert reader.buffered() == len(frame) - 1
    [packet] = reader.feed(frame[-1:])
    assert len(packet.payload) == size - 7 and reader.buffered() == 0
    assert time.process_time() - started < 5.0


@pytest.mark.parametrize(("packet", "version"), [
    (m.Publish("t"), m.V311),  # the smallest packet that makes an object
    (m.Publish("t"), m.V5),
    (m.Puback(5, 0x10), m.V5),
    (m.Subscribe(1, tuple(m.Subscription("a") for _ in range(2000))), m.V311),
    (m.Publish("t", properties={m.Property.USER_PROPERTY: [("a", "b")] * 256}), m.V5),
])
def test_decoded_packets_take_about_32_bytes_per_byte_fed(packet: Any, version: int) -> None:
    raw = m.encode(packet, version)
    data = raw * max(1, 50_000 // len(raw))
    reader = m.PacketReader(version=version)
    tracemalloc.start()
    try:
        out = reader.feed(data)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert out[0] == packet and len(out) == len(data) // len(raw)
    assert held <= 40 * len(data)  # 32 measured for the worst, on CPython 3.11
