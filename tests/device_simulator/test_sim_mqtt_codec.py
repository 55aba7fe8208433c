"""The publisher's MQTT packets, byte for byte, and the reader's framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_simulator import mqtt_codec as codec


@pytest.mark.parametrize(("n", "raw"), [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                        (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
                                        (268_435_455, b"\xff\xff\xff\x7f")])
def test_varint_matches_the_spec_examples(n, raw):
    assert codec.varint(n) == raw


def test_varint_refuses_lengths_mqtt_cannot_carry():
    with pytest.raises(ValueError):
        codec.varint(268_435_456)


def test_connect_311_with_credentials():
    raw = codec.connect("dev-1", keepalive=30, clean=True, username="u", password="p")
    assert raw == (b"\x10\x17" b"\x00\x04MQTT\x04" b"\xc2" b"\x00\x1e"
                   b"\x00\x05dev-1" b"\x00\x01u" b"\x00\x01p")


def test_connect_5_has_an_empty_property_list_and_no_clean_flag_when_persistent():
    raw = codec.connect("d", keepalive=60, clean=False, version=codec.V5)
    assert raw == b"\x10\x0e\x00\x04MQTT\x05\x00\x00\x3c\x00\x00\x01d"


def test_publish_qos0_qos1_and_mqtt5():
    topic = codec.topic_field("a/b")
    assert codec.publish(topic, b"xy") == b"\x30\x07\x00\x03a/bxy"
    assert codec.publish(topic, b"xy", 1, 258) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    assert codec.publish(topic, b"xy", 1, 1, codec.V5) == b"\x32\x0a\x00\x03a/b\x00\x01\x00xy"
    assert codec.with_dup(b"\x32\x09\x00\x03a/b\x01\x02xy")[0] == 0x3A


def test_publish_length_uses_a_multi_byte_varint_for_big_payloads():
    raw = codec.publish(codec.topic_field("t"), b"x" * 300_000)
    assert raw[0] == 0x30 and raw[1:4] == codec.varint(300_003)
    assert len(raw) == 1 + 3 + 3 + 300_000


def test_an_mqtt5_connack_yields_receive_maximum_and_server_keepalive():
    props = (b"\x21\x00\x14" b"\x13\x00\x0a" b"\x12\x00\x02id" b"\x26\x00\x01k\x00\x01v"
             b"\x27\x00\x01\x00\x00" b"\x24\x01")
    body = b"\x00\x00" + codec.varint(len(props)) + props
    ack = codec.parse_connack(body, codec.V5)
    assert ack.accepted and ack.receive_maximum == 20 and ack.server_keepalive == 10
    assert codec.parse_connack(b"\x00\x00\x00", codec.V5).receive_maximum is None
    # The same bytes read as 3.1.1 ignore the properties.
    assert codec.parse_connack(body).receive_maximum is None
    with pytest.raises(codec.MqttProtocolError):
        codec.parse_connack(b"\x00\x00\x03\x7f\x00\x00", codec.V5)
    with pytest.raises(codec.MqttProtocolError):
        codec.parse_connack(b"\x00\x00\x05\x21\x00\x14", codec.V5)


def test_connack_and_puback_parsing():
    ack = codec.parse_connack(b"\x01\x00")
    assert ack.session_present and ack.accepted
    refused = codec.parse_connack(b"\x00\x05")
    assert not refused.accepted and refused.reason_text == "not authorized"
    assert codec.parse_puback(b"\x01\x02") == (258, 0)
    assert codec.parse_puback(b"\x00\x07\x87\x00") == (7, 0x87)
    with pytest.raises(codec.MqttProtocolError):
        codec.parse_puback(b"\x01")


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_the_reader_reassembles_packets_however_the_bytes_are_split(bodies, data):
    stream = b"".join(bytes((0x40,)) + codec.varint(len(b)) + b for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = codec.PacketReader()
    got = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got.extend(reader.feed(stream[prev:cut]))
        prev = cut
    assert got == [(codec.PUBACK, 0, b) for b in bodies]


def test_the_reader_refuses_a_five_byte_length():
    with pytest.raises(codec.MqttProtocolError):
        codec.PacketReader().feed(b"\x40\xff\xff\xff\xff\x01")
