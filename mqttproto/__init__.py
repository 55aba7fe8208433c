"""MQTT 3.1.1 and 5 as values and bytes, with no I/O: the one codec of the project.

Strategy: like ``uplink``, a sans-IO package every side imports (the agent's MQTT
listener and its paho-driven ingest, the device simulator), so they can never disagree
on a byte. The private modules each do one job: ``_wire`` (MQTT's data types),
``_properties`` (MQTT 5 properties), ``_reasons`` (reason codes), ``_packets`` (the
packets as frozen dataclasses), ``_decode`` / ``_encode`` (both directions for every
packet type), ``_reader`` (a stream into packets, with bounded memory), ``_fast`` (the
hot paths: the simulator's precomputed-topic PUBLISH frames and a PUBLISH splitter for
paho's buffers). Only the names below are public; tests/mqttproto/test_exports.py pins
them.

Bounds on hostile input (see ``_reader`` and ``_properties``): a reader never holds more
than ``max(max_packet_size, 5)`` bytes between calls and refuses a packet whose declared
size is over ``max_packet_size`` before buffering its body; a packet carries at most
``MAX_USER_PROPERTIES`` user properties; every malformed input raises
``MqttProtocolError`` with the reason code to answer, never another exception.
"""

from ._decode import PublishFields, decode
from ._encode import encode
from ._errors import MqttProtocolError
from ._fast import (
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    publish_frame,
    split_publish,
    topic_field,
    with_dup,
)
from ._packets import (
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
from ._properties import MAX_USER_PROPERTIES, Properties, Property
from ._reader import MAX_PACKET_SIZE, PacketReader
from ._reasons import CONNACK_V311_TO_V5, ReasonCode, connack_return_code, reason_name

__all__ = [
    "CONNACK_V311_TO_V5",
    "DISCONNECT_PACKET",
    "MAX_PACKET_SIZE",
    "MAX_USER_PROPERTIES",
    "PINGREQ_PACKET",
    "V5",
    "V311",
    "Auth",
    "Connack",
    "Connect",
    "Disconnect",
    "MqttProtocolError",
    "Packet",
    "PacketReader",
    "Pingreq",
    "Pingresp",
    "Properties",
    "Property",
    "Puback",
    "Pubcomp",
    "Publish",
    "PublishFields",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "connack_return_code",
    "decode",
    "encode",
    "publish_frame",
    "reason_name",
    "split_publish",
    "topic_field",
    "with_dup",
]
