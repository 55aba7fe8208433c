"""decode(encode(p)) == p for every packet type, and the reader splits streams anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_strategies import packets, publish, split_frame

import mqttproto as m


@pytest.mark.parametrize("version", [m.V311, m.V5])
@given(data=st.data())
def test_every_packet_round_trips(version: int, data: st.DataObject) -> None:
    packet = data.draw(packets(version))
    first, body = split_frame(m.encode(packet, version))
    assert m.decode(first, body, version) == packet


@pytest.mark.parametrize("version", [m.V311, m.V5])
@settings(max_examples=50)
@given(data=st.data())
def test_the_reader_splits_a_stream_cut_anywhere(version: int, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(version).filter(lambda p: not isinstance(p, m.Connect)),
                              min_size=1, max_size=6))
    stream = b"".join(m.encode(p, version) for p in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = m.PacketReader(version=version)
    got = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[start:stop])
    assert got == sent and reader.buffered() == 0


@pytest.mark.parametrize("version", [m.V311, m.V5])
@given(data=st.data())
def test_fast_frames_are_the_full_encoders_bytes(version: int, data: st.DataObject) -> None:
    p = data.draw(publish(version))
    p = m.Publish(p.topic, p.payload, min(p.qos, 1), packet_id=p.packet_id)
    frame = m.publish_frame(m.topic_field(p.topic), p.payload, p.qos, p.packet_id, version)
    assert frame == m.encode(p, version)
    assert m.with_dup(frame) == m.encode(m.Publish(p.topic, p.payload, p.qos, dup=True,
                                                   packet_id=p.packet_id), version)
    body = split_frame(frame)[1]
    assert m.split_publish(body, p.qos, version == m.V5) == (
        p.topic.encode(), p.packet_id, p.payload)


def test_split_publish_leaves_properties_and_short_bodies_to_the_full_decoder() -> None:
    with_props = m.encode(m.Publish("a", b"x", 1, packet_id=3,
                                    properties={m.Property.MESSAGE_EXPIRY_INTERVAL: 60}), m.V5)
    assert m.split_publish(with_props[2:], 1, True) is None
    for body, qos, v5 in [(b"", 0, False), (b"\x00", 0, False), (b"\x00\x05abc", 0, False),
                          (b"\x00\x01a\x00", 1, False), (b"\x00\x01a", 0, True)]:
        assert m.split_publish(body, qos, v5) is None


def test_a_server_reader_takes_its_version_from_connect() -> None:
    reader = m.PacketReader(1024)
    connect = m.Connect(m.V5, "dev-1", properties={m.Property.RECEIVE_MAXIMUM: 10})
    pub = m.Publish("t", b"x", 1, packet_id=1, properties={m.Property.TOPIC_ALIAS: 2})
    assert reader.feed(m.encode(connect, m.V5) + m.encode(pub, m.V5)) == [connect, pub]
    assert reader.version == m.V5


@pytest.mark.parametrize("first", [m.encode(m.Publish("t"), m.V311), b"\xc0\x00"])
def test_a_server_reader_wants_connect_first(first: bytes) -> None:
    with pytest.raises(m.MqttProtocolError) as err:
        m.PacketReader(1024).feed(first)
    assert err.value.reason_code == m.ReasonCode.PROTOCOL_ERROR


def test_a_second_connect_is_a_protocol_error_and_earlier_packets_are_kept() -> None:
    reader = m.PacketReader(1024)
    connect = m.encode(m.Connect(m.V311, "a"), m.V311)
    pub = m.Publish("t", b"1")
    with pytest.raises(m.MqttProtocolError) as err:
        reader.feed(connect + m.encode(pub, m.V311) + connect)
    assert err.value.reason_code == m.ReasonCode.PROTOCOL_ERROR
    assert err.value.packets == [m.Connect(m.V311, "a"), pub]


def test_connack_helpers_read_mqtt5_properties() -> None:
    ack = m.Connack(False, 0, {m.Property.RECEIVE_MAXIMUM: 20, m.Property.SERVER_KEEP_ALIVE: 5})
    back = m.decode(0x20, m.encode(ack, m.V5)[2:], m.V5)
    assert back.accepted and back.receive_maximum == 20 and back.server_keepalive == 5
    refused = m.decode(0x20, m.encode(m.Connack(False, 0x87), m.V311)[2:], m.V311)
    assert refused == m.Connack(False, 0x87) and refused.reason_text == "not authorized"
    assert m.encode(m.Connack(False, 0x87), m.V311) == b"\x20\x02\x00\x05"


@pytest.mark.parametrize(("packet", "version"), [
    (m.Publish("t", qos=3), m.V311),
    (m.Publish("t", qos=1), m.V311),  # no packet id
    (m.Publish("t", properties={m.Property.TOPIC_ALIAS: 1}), m.V311),
    (m.Publish("t" * 70000), m.V311),
    (m.Auth(), m.V311),
    (m.Puback(1, 0x10), m.V311),
    (m.Publish("t", properties={m.Property.RECEIVE_MAXIMUM: 1}), m.V5),
])
def test_encoding_a_bad_value_is_a_value_error(packet: object, version: int) -> None:
    with pytest.raises(ValueError):
        m.encode(packet, version)
