"""Packets byte for byte against the spec's examples (what a publisher sends and gets)."""

from __future__ import annotations

import pytest

import mqttproto as m
from mqttproto._wire import varint


@pytest.mark.parametrize(("n", "raw"), [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                        (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
                                        (268_435_455, b"\xff\xff\xff\x7f")])
def test_varint_matches_the_spec_examples(n: int, raw: bytes) -> None:
    assert varint(n) == raw


def test_varint_refuses_lengths_mqtt_cannot_carry() -> None:
    with pytest.raises(ValueError):
        varint(268_435_456)


def test_connect_311_with_credentials() -> None:
    raw = m.encode(m.Connect(m.V311, "dev-1", True, 30, "u", b"p"), m.V311)
    assert raw == (b"\x10\x17" b"\x00\x04MQTT\x04" b"\xc2" b"\x00\x1e"
                   b"\x00\x05dev-1" b"\x00\x01u" b"\x00\x01p")


def test_connect_5_has_an_empty_property_list_and_no_clean_flag_when_persistent() -> None:
    raw = m.encode(m.Connect(m.V5, "d", False, 60), m.V5)
    assert raw == b"\x10\x0e\x00\x04MQTT\x05\x00\x00\x3c\x00\x00\x01d"


def test_publish_frames_qos0_qos1_and_mqtt5() -> None:
    topic = m.topic_field("a/b")
    assert m.publish_frame(topic, b"xy") == b"\x30\x07\x00\x03a/bxy"
    assert m.publish_frame(topic, b"xy", 1, 258) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    assert m.publish_frame(topic, b"xy", 1, 1, m.V5) == b"\x32\x0a\x00\x03a/b\x00\x01\x00xy"
    assert m.with_dup(b"\x32\x09\x00\x03a/b\x01\x02xy")[0] == 0x3A


def test_a_big_payload_takes_a_multi_byte_remaining_length() -> None:
    raw = m.publish_frame(m.topic_field("t"), b"x" * 300_000)
    assert raw[0] == 0x30 and raw[1:4] == varint(300_003)
    assert len(raw) == 1 + 3 + 3 + 300_000


def test_an_mqtt5_connack_yields_receive_maximum_and_server_keepalive() -> None:
    props = (b"\x21\x00\x14" b"\x13\x00\x0a" b"\x12\x00\x02id" b"\x26\x00\x01k\x00\x01v"
             b"\x27\x00\x01\x00\x00" b"\x24\x01")
    ack = m.decode(0x20, b"\x00\x00" + varint(len(props)) + props, m.V5)
    assert ack.accepted and ack.receive_maximum == 20 and ack.server_keepalive == 10
    assert ack.properties[m.Property.USER_PROPERTY] == [("k", "v")]
    assert m.decode(0x20, b"\x00\x00\x00", m.V5).receive_maximum is None
    for bad in (b"\x00\x00\x03\x7f\x00\x00", b"\x00\x00\x05\x21\x00\x14"):
        with pytest.raises(m.MqttProtocolError):
            m.decode(0x20, bad, m.V5)


def test_connack_and_puback() -> None:
    ack = m.decode(0x20, b"\x01\x00", m.V311)
    assert ack.session_present and ack.accepted
    refused = m.decode(0x20, b"\x00\x05", m.V311)
    assert not refused.accepted and refused.reason_text == "not authorized"
    assert m.decode(0x40, b"\x01\x02", m.V311) == m.Puback(258)
    assert m.decode(0x40, b"\x00\x07\x87\x00", m.V5) == m.Puback(7, 0x87)
    assert m.decode(0x40, b"\x00\x07\x10", m.V5) == m.Puback(7, 0x10)  # no subscribers
    with pytest.raises(m.MqttProtocolError):
        m.decode(0x40, b"\x01", m.V311)
    with pytest.raises(m.MqttProtocolError):
        m.decode(0x40, b"\x00\x07\x87", m.V311)  # 3.1.1 has no reason code
