"""The public surface of ``mqttproto`` is exactly these names; changing it is a decision."""

from __future__ import annotations

import pickle

import mqttproto

EXPORTED = [
    "CONNACK_V311_TO_V5", "DISCONNECT_PACKET", "MAX_PACKET_SIZE", "MAX_USER_PROPERTIES",
    "PINGREQ_PACKET", "V5", "V311", "Auth", "Connack", "Connect", "Disconnect",
    "MqttProtocolError", "Packet", "PacketReader", "Pingreq", "Pingresp", "Properties",
    "Property", "Puback", "Pubcomp", "Pubrec", "Pubrel", "Publish", "PublishFields",
    "ReasonCode", "Suback", "Subscribe", "Subscription", "Unsuback", "Unsubscribe", "Will",
    "connack_return_code",
    "decode", "encode", "publish_frame", "reason_name", "split_publish", "topic_field",
    "with_dup",
]


def test_all_is_pinned() -> None:
    assert sorted(mqttproto.__all__) == sorted(EXPORTED)
    assert len(set(mqttproto.__all__)) == len(mqttproto.__all__)


def test_nothing_public_outside_all() -> None:
    public = {name for name in vars(mqttproto)
              if not name.startswith("_") and not isinstance(getattr(mqttproto, name),
                                                             type(mqttproto))}
    assert public == set(mqttproto.__all__)


def test_the_error_carries_its_reason_code_and_pickles() -> None:
    err = mqttproto.MqttProtocolError(0x81, "bad")
    assert err.reason_code == 0x81 and "0x81" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason_code, back.message) == (0x81, "bad")


def test_connack_codes_map_both_ways_for_3_1_1() -> None:
    for old, new in mqttproto.CONNACK_V311_TO_V5.items():
        assert mqttproto.connack_return_code(new) == old
    assert mqttproto.connack_return_code(mqttproto.ReasonCode.BANNED) == 5
    assert mqttproto.connack_return_code(mqttproto.ReasonCode.SERVER_BUSY) == 3
    assert mqttproto.reason_name(0x87) == "not authorized"
    assert mqttproto.reason_name(0x03) == "reason code 0x03"
