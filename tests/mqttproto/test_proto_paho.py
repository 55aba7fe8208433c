"""mqttproto against paho-mqtt, in both directions.

paho writes, we read: a real paho ``Client`` talks to a socket we hold (``PahoPeer``); its
bytes must decode to the packet it was asked to send and ``encode`` must give the same
bytes back. We write, paho reads: our bytes go through paho's own decoders (the
``paho.mqtt._packet`` functions its ``Client`` calls, and its ``Properties.unpack``) or
into the connected client, and paho must see the values we encoded.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_strategies import (
    connect,
    packet_id,
    payload,
    properties,
    split_frame,
    topic_filter,
    topic_name,
)
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from paho_peer import PahoPeer, from_paho, to_paho

import mqttproto as m
from mqttproto._reasons import ALLOWED, SUBACK_V311

VERSIONS = [m.V311, m.V5]
SOCKETS = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
PAHO_PROTOCOL = {m.V311: MQTTProtocolVersion.MQTTv311, m.V5: MQTTProtocolVersion.MQTTv5}


def _paho_codes(packet_type: int) -> list[int]:
    """The reason codes paho knows for ``packet_type``: ours, less 0x99 in CONNACK (the
    will's payload format, in section 3.2.2.2 of MQTT 5 but missing from paho's table)."""
    return sorted(c for c in ALLOWED[packet_type] if (packet_type, c) != (2, 0x99))


def _peer(version: int) -> PahoPeer:
    peer = PahoPeer(m.Connect(version, "peer"))
    peer.packet()  # its CONNECT
    peer.connack()
    return peer


def _same_bytes(raw: bytes, packet: Any, version: int) -> None:
    assert m.encode(packet, version) == raw


# -- paho writes, mqttproto reads ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@SOCKETS
@given(data=st.data())
def test_paho_connect(version: int, data: st.DataObject) -> None:
    sent = data.draw(connect(version, paho_shape=True))
    peer = PahoPeer(sent)
    try:
        raw, got = peer.packet()
    finally:
        peer.close()
    assert got == sent
    _same_bytes(raw, got, version)


@pytest.mark.parametrize("version", VERSIONS)
@SOCKETS
@given(topic=topic_name, body=payload, qos=st.integers(0, 2), retain=st.booleans(),
       data=st.data())
def test_paho_publish(version: int, topic: str, body: bytes, qos: int, retain: bool,
                      data: st.DataObject) -> None:
    props = data.draw(properties(3)) if version == m.V5 else {}
    props.pop(m.Property.SUBSCRIPTION_IDENTIFIER, None)  # server to client only
    props.pop(m.Property.TOPIC_ALIAS, None)  # paho checks it against the broker's maximum
    peer = _peer(version)
    try:
        info = peer.client.publish(topic, body, qos, retain, to_paho(props, 3))
        raw, got = peer.packet()
    finally:
        peer.close()
    assert got == m.Publish(topic, body, qos, retain, False, info.mid if qos else 0, props)
    _same_bytes(raw, got, version)


@pytest.mark.parametrize("version", VERSIONS)
@SOCKETS
@given(pid=packet_id)
def test_paho_acks(version: int, pid: int) -> None:
    """PUBACK (QoS 1 acked), PUBREC then PUBCOMP (QoS 2 in), PUBREL (QoS 2 out)."""
    peer = _peer(version)
    try:
        peer.send(m.encode(m.Publish("in/1", b"x", 1, packet_id=pid), version))
        peer.pump(lambda: peer.received)
        peer.client.ack(pid, 1)
        raw, got = peer.packet()
        assert got == m.Puback(pid)
        _same_bytes(raw, got, version)
        peer.send(m.encode(m.Publish("in/2", b"y", 2, packet_id=pid), version))
        raw, got = peer.reply()
        assert got == m.Pubrec(pid)
        _same_bytes(raw, got, version)
        peer.send(m.encode(m.Pubrel(pid), version))
        peer.pump(lambda: len(peer.received) == 2)
        peer.client.ack(pid, 2)
        raw, got = peer.packet()
        assert got == m.Pubcomp(pid)
        _same_bytes(raw, got, version)
        info = peer.client.publish("out", b"z", 2)
        peer.packet()
        peer.send(m.encode(m.Pubrec(info.mid), version))
        raw, got = peer.reply()
        assert got == m.Pubrel(info.mid)
        _same_bytes(raw, got, version)
    finally:
        peer.close()


@pytest.mark.parametrize("version", VERSIONS)
@SOCKETS
@given(data=st.data())
def test_paho_subscribe_and_unsubscribe(version: int, data: st.DataObject) -> None:
    filters = data.draw(st.lists(topic_filter, min_size=1, max_size=3))
    qos = data.draw(st.lists(st.integers(0, 2), min_size=len(filters), max_size=len(filters)))
    props = data.draw(properties(8)) if version == m.V5 else {}
    unsub_props = data.draw(properties(10)) if version == m.V5 else {}
    if version == m.V5:
        flags = data.draw(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 2)),
                                   min_size=len(filters), max_size=len(filters)))
        subs = tuple(m.Subscription(f, q, *fl) for f, q, fl in zip(filters, qos, flags,
                                                                    strict=True))
        request: list[Any] = [(s.topic_filter, SubscribeOptions(s.qos, s.no_local,
                                                                s.retain_as_published,
                                                                s.retain_handling))
                              for s in subs]
    else:
        subs = tuple(m.Subscription(f, q) for f, q in zip(filters, qos, strict=True))
        request = [(s.topic_filter, s.qos) for s in subs]
    peer = _peer(version)
    try:
        _rc, mid = peer.client.subscribe(request, properties=to_paho(props, 8))
        raw, got = peer.packet()
        assert got == m.Subscribe(mid, subs, props)
        _same_bytes(raw, got, version)
        _rc, mid = peer.client.unsubscribe(filters, properties=to_paho(unsub_props, 10))
        raw, got = peer.packet()
        assert got == m.Unsubscribe(mid, tuple(filters), unsub_props)
        _same_bytes(raw, got, version)
    finally:
        peer.close()


@SOCKETS
@given(code=st.sampled_from(sorted(ALLOWED[14])), props=properties(14))
def test_paho_disconnect_v5(code: int, props: dict[int, Any]) -> None:
    props.pop(m.Property.SESSION_EXPIRY_INTERVAL, None)  # paho refuses a change from 0
    peer = _peer(m.V5)
    try:
        peer.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=code),
                               to_paho(props, 14))
        raw, got = peer.packet()
    finally:
        peer.close()
    assert got == m.Disconnect(code, props)
    if code or props:
        _same_bytes(raw, got, m.V5)
    else:  # paho keeps the reason byte the spec lets a sender omit (3.14.2.1); we omit it
        assert (raw, m.encode(got, m.V5)) == (b"\xe0\x01\x00", b"\xe0\x00")


def test_paho_disconnect_and_ping_v311() -> None:
    peer = _peer(m.V311)
    try:
        peer.client.disconnect()
        raw, got = peer.packet()
    finally:
        peer.close()
    assert (raw, got) == (b"\xe0\x00", m.Disconnect())
    assert m.encode(m.Pingreq(), m.V311) == b"\xc0\x00"  # paho: _send_simple_command


# -- mqttproto writes, paho reads ---------------------------------------------------------


def _paho_props(props: Any, packet_type: int) -> dict[int, Any]:
    return from_paho(props, packet_type) if props is not None else {}


@pytest.mark.parametrize("version", VERSIONS)
@SOCKETS
@given(topic=topic_name, body=payload, qos=st.integers(0, 1), retain=st.booleans(),
       dup=st.booleans(), pid=packet_id, data=st.data())
def test_paho_client_reads_our_publish(version: int, topic: str, body: bytes, qos: int,
                                       retain: bool, dup: bool, pid: int,
                                       data: st.DataObject) -> None:
    props = data.draw(properties(3)) if version == m.V5 else {}
    sent = m.Publish(topic, body, qos, retain, dup and qos > 0, pid if qos else 0, props)
    peer = _peer(version)
    try:
        peer.send(m.encode(sent, version))
        peer.pump(lambda: peer.received)
    finally:
        peer.close()
    msg = peer.received[0]
    assert (msg.topic, msg.payload, msg.qos, msg.retain, msg.dup, msg.mid) == (
        topic, body, qos, retain, sent.dup, sent.packet_id)
    if version == m.V5:
        assert from_paho(msg.properties, 3) == props


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40)
@given(data=st.data())
def test_paho_decodes_our_client_bound_packets(version: int, data: st.DataObject) -> None:
    v5 = version == m.V5
    proto = PAHO_PROTOCOL[version]
    codes = _paho_codes(2) if v5 else sorted(m.CONNACK_V311_TO_V5.values())
    connack = m.Connack(data.draw(st.booleans()), data.draw(st.sampled_from(codes)),
                        data.draw(properties(2)) if v5 else {})
    first, body = split_frame(m.encode(connack, version))
    theirs = _packet.decode_connack(first, body, proto)
    assert theirs.flags == int(connack.session_present)
    assert theirs.reason.value == connack.reason_code
    assert _paho_props(theirs.properties, 2) == connack.properties

    for cls, decoder, ptype in [(m.Puback, _packet.decode_puback, 4),
                                (m.Pubrec, _packet.decode_pubrec, 5),
                                (m.Pubrel, _packet.decode_pubrel, 6),
                                (m.Pubcomp, _packet.decode_pubcomp, 7)]:
        ack = cls(data.draw(packet_id), data.draw(st.sampled_from(sorted(ALLOWED[ptype])))
                  if v5 else 0, data.draw(properties(ptype)) if v5 else {})
        first, body = split_frame(m.encode(ack, version))
        theirs = decoder(first, body, proto)
        assert (theirs.mid, theirs.reason.value) == (ack.packet_id, ack.reason_code)
        assert _paho_props(theirs.properties, ptype) == ack.properties

    suback_codes = sorted(ALLOWED[9] if v5 else SUBACK_V311)
    suback = m.Suback(data.draw(packet_id), tuple(data.draw(st.lists(
        st.sampled_from(suback_codes), min_size=1, max_size=4))),
        data.draw(properties(9)) if v5 else {})
    first, body = split_frame(m.encode(suback, version))
    theirs = _packet.decode_suback(first, body, proto)
    assert theirs.mid == suback.packet_id
    assert tuple(c.value for c in theirs.reason_codes) == suback.reason_codes
    assert _paho_props(theirs.properties, 9) == suback.properties

    unsuback = m.Unsuback(data.draw(packet_id))
    if v5:
        unsuback = m.Unsuback(unsuback.packet_id, tuple(data.draw(st.lists(
            st.sampled_from(sorted(ALLOWED[11])), min_size=1, max_size=3))),
            data.draw(properties(11)))
    first, body = split_frame(m.encode(unsuback, version))
    theirs = _packet.decode_unsuback(first, body, proto)
    assert theirs.mid == unsuback.packet_id
    assert tuple(c.value for c in theirs.reason_codes) == unsuback.reason_codes
    assert _paho_props(theirs.properties, 11) == unsuback.properties

    if v5:
        disconnect = m.Disconnect(data.draw(st.sampled_from(sorted(ALLOWED[14]))),
                                  data.draw(properties(14)))
        first, body = split_frame(m.encode(disconnect, version))
        theirs = _packet.decode_disconnect(first, body, proto)
        assert (theirs.reason.value if theirs.reason else 0) == disconnect.reason_code
        assert _paho_props(theirs.properties, 14) == disconnect.properties


@given(data=st.data(), packet_type=st.sampled_from([0, 1, 2, 3, 4, 8, 9, 14, 15]))
def test_properties_match_paho_both_ways(data: st.DataObject, packet_type: int) -> None:
    from mqttproto._properties import encode_properties, read_properties
    props = data.draw(properties(packet_type))
    ours = encode_properties(props, packet_type)
    paho = to_paho(props, packet_type)
    assert ours == (paho.pack() if paho is not None else b"\x00")
    assert read_properties(ours, 0, len(ours), packet_type) == (props, len(ours))
    back = to_paho({}, packet_type) or _new_props(packet_type)
    back.unpack(ours)
    assert from_paho(back, packet_type) == props


def _new_props(packet_type: int) -> Any:
    from paho.mqtt.properties import Properties
    from paho_peer import PAHO_TYPES
    return Properties(PAHO_TYPES[packet_type])
