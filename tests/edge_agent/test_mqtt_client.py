"""The agent's PUBLISH split (``mqttproto.split_publish``), checked against paho's own
``decode_publish`` as IngestClient calls it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion

from mqttproto import split_publish


def body(topic: bytes, qos: int, mid: int, payload: bytes, v5: bool,
         props: bytes = b"") -> bytes:
    out = struct.pack("!H", len(topic)) + topic
    if qos:
        out += struct.pack("!H", mid)
    if v5:
        out += bytes([len(props)]) + props
    return out + payload


@given(topic=st.binary(min_size=1, max_size=40), qos=st.integers(0, 1),
       mid=st.integers(1, 65535), payload=st.binary(max_size=200), v5=st.booleans())
def test_decodes_what_paho_decodes(topic: bytes, qos: int, mid: int, payload: bytes,
                                   v5: bool) -> None:
    packet = body(topic, qos, mid, payload, v5)
    proto = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    theirs = _packet.decode_publish(0x30 | qos << 1, bytearray(packet), proto)
    assert split_publish(packet, qos, v5) == (theirs.topic, theirs.mid, theirs.payload)


def test_v5_properties_go_to_paho() -> None:
    # message expiry interval (0x02) = 60 s: not ours to decode
    packet = body(b"devices/a/telemetry", 1, 7, b"{}", True, props=b"\x02\x00\x00\x00\x3c")
    assert split_publish(packet, 1, True) is None


@pytest.mark.parametrize(("packet", "qos", "v5"), [
    (b"", 0, False),
    (b"\x00", 0, False),
    (b"\x00\x05abc", 0, False),  # topic runs past the packet
    (b"\x00\x01a\x00", 1, False),  # packet id cut short
    (b"\x00\x01a", 0, True),  # no property length
])
def test_short_packets_go_to_paho(packet: bytes, qos: int, v5: bool) -> None:
    assert split_publish(packet, qos, v5) is None
