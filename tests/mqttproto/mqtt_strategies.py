"""Hypothesis strategies for valid MQTT packets, in the shapes ``mqttproto`` decodes to.

Property dicts are built in ascending id order, the order paho packs them in, so the
bytes of both encoders can be compared as they are. Text avoids U+FEFF, which paho's
decoder refuses although MQTT allows it (spec 1.5.4): that difference is paho's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import mqttproto as m
from mqttproto._properties import (
    BINARY,
    BOOL,
    NONZERO_U16,
    NONZERO_U32,
    PAIR,
    SPEC,
    U16,
    U32,
    UTF8,
    VARINT,
    WILL,
)

ALPHABET = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff")
text = st.text(ALPHABET, max_size=12)
topic_name = st.text(st.characters(blacklist_categories=("Cs",),
                                   blacklist_characters="\x00\ufeff+#"), min_size=1,
                     max_size=20)
_level = st.text(st.characters(blacklist_categories=("Cs",),
                               blacklist_characters="\x00\ufeff+#/"), max_size=6)
#: valid topic filters: levels of text or "+", maybe a final "#"
topic_filter = st.builds(
    lambda levels, tail: "/".join(levels + (["#"] if tail else [])) or "#",
    st.lists(_level | st.just("+"), max_size=4), st.booleans())
packet_id = st.integers(1, 65535)
payload = st.binary(max_size=64)

_VALUES: dict[int, st.SearchStrategy[Any]] = {
    BOOL: st.integers(0, 1), U16: st.integers(0, 65535), NONZERO_U16: st.integers(1, 65535),
    U32: st.integers(0, 2**32 - 1), NONZERO_U32: st.integers(1, 2**32 - 1),
    VARINT: st.integers(1, 268_435_455), UTF8: text, BINARY: st.binary(max_size=16),
}


@st.composite
def properties(draw: st.DrawFn, packet_type: int) -> dict[int, Any]:
    allowed = sorted(pid for pid, (_, packets) in SPEC.items() if packet_type in packets)
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=4)) if allowed else []
    props: dict[int, Any] = {}
    for pid in sorted(chosen):
        kind = SPEC[pid][0]
        key = m.Property(pid)
        if kind == PAIR:
            props[key] = draw(st.lists(st.tuples(text, text), min_size=1, max_size=3))
        elif pid == m.Property.MAXIMUM_PACKET_SIZE:  # paho's range: what MQTT can frame
            props[key] = draw(st.integers(1, 268_435_455))
        elif pid == m.Property.SUBSCRIPTION_IDENTIFIER and packet_type == 3:
            props[key] = draw(st.lists(_VALUES[VARINT], min_size=1, max_size=3))
        else:
            props[key] = draw(_VALUES[kind])
    return props


def props_for(version: int, packet_type: int) -> st.SearchStrategy[dict[int, Any]]:
    return properties(packet_type) if version == m.V5 else st.just({})


@st.composite
def connect(draw: st.DrawFn, version: int, paho_shape: bool = False) -> m.Connect:
    will = None
    if draw(st.booleans()):
        will = m.Will(draw(topic_name), draw(payload), draw(st.integers(0, 2)),
                      draw(st.booleans()), draw(props_for(version, WILL)))
    username = draw(st.none() | text)
    password = draw(st.none() | st.binary(max_size=16))
    if paho_shape and username is None:
        password = None  # paho sends a password only with a user name
    if version == m.V311 and username is None:
        password = None  # 3.1.1 forbids it
    client_id = draw(text)
    clean = draw(st.booleans()) or (paho_shape and not client_id)
    return m.Connect(version, client_id, clean, draw(st.integers(0, 65535)), username,
                     password, will, draw(props_for(version, 1)))


def publish(version: int) -> st.SearchStrategy[m.Publish]:
    return st.builds(
        lambda topic, body, qos, retain, dup, pid, props: m.Publish(
            topic, body, qos, retain, dup and qos > 0, pid if qos else 0, props),
        topic_name, payload, st.integers(0, 2), st.booleans(), st.booleans(), packet_id,
        props_for(version, 3))


def _ack(cls: type, version: int, packet_type: int) -> st.SearchStrategy[Any]:
    codes = sorted(m._reasons.ALLOWED[packet_type]) if version == m.V5 else [0]
    return st.builds(cls, packet_id, st.sampled_from(codes), props_for(version, packet_type))


def subscription(version: int) -> st.SearchStrategy[m.Subscription]:
    if version == m.V311:
        return st.builds(m.Subscription, topic_filter, st.integers(0, 2))
    return st.builds(m.Subscription, topic_filter, st.integers(0, 2), st.booleans(),
                     st.booleans(), st.integers(0, 2))


def packets(version: int) -> st.SearchStrategy[Any]:
    """Any packet valid in ``version`` (both directions)."""
    from mqttproto._reasons import ALLOWED, SUBACK_V311
    suback_codes = sorted(ALLOWED[9] if version == m.V5 else SUBACK_V311)
    connack_codes = sorted(ALLOWED[2] if version == m.V5 else m.CONNACK_V311_TO_V5.values())
    options = [
        connect(version),
        st.builds(m.Connack, st.booleans(), st.sampled_from(connack_codes),
                  props_for(version, 2)),
        publish(version),
        _ack(m.Puback, version, 4), _ack(m.Pubrec, version, 5),
        _ack(m.Pubrel, version, 6), _ack(m.Pubcomp, version, 7),
        st.builds(m.Subscribe, packet_id,
                  st.lists(subscription(version), min_size=1, max_size=3).map(tuple),
                  props_for(version, 8)),
        st.builds(m.Suback, packet_id,
                  st.lists(st.sampled_from(suback_codes), min_size=1, max_size=4).map(tuple),
                  props_for(version, 9)),
        st.builds(m.Unsubscribe, packet_id,
                  st.lists(topic_filter, min_size=1, max_size=3).map(tuple),
                  props_for(version, 10)),
        st.just(m.Pingreq()), st.just(m.Pingresp()),
    ]
    if version == m.V5:
        options += [
            st.builds(m.Unsuback, packet_id,
                      st.lists(st.sampled_from(sorted(ALLOWED[11])), min_size=1,
                               max_size=3).map(tuple), properties(11)),
            st.builds(m.Disconnect, st.sampled_from(sorted(ALLOWED[14])), properties(14)),
            st.builds(m.Auth, st.sampled_from(sorted(ALLOWED[15])), properties(15)),
        ]
    else:
        options += [st.builds(m.Unsuback, packet_id), st.just(m.Disconnect())]
    return st.one_of(options)


def split_frame(raw: bytes) -> tuple[int, bytes]:
    """(first byte, body) of one encoded packet."""
    length, pos = m._wire.read_varint(raw, 1, len(raw))
    assert pos + length == len(raw)
    return raw[0], raw[pos:]
