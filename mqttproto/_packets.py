"""The MQTT control packets as values: frozen dataclasses with slots, one per type.

Strategy: one class per packet type, the same for MQTT 3.1.1 and 5; fields 3.1.1 has no
room for (properties, most reason codes) are simply empty/0 there. Reason codes are
always MQTT 5 codes (``ReasonCode``): ``encode`` maps a CONNACK's to the 3.1.1 return
code and ``decode`` maps back, so a server writes its logic once for both versions.
Text is ``str`` (checked UTF-8), payloads and passwords are ``bytes``. Treat a decoded
packet's ``properties`` as read-only: the reader hands out one shared ``Puback`` per
packet id for successful acks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._properties import Properties, Property
from ._reasons import reason_name

V311 = 4
V5 = 5

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)


def _props() -> Properties:
    return {}


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Connect:
    packet_type: ClassVar[int] = CONNECT
    protocol_level: int  # 4 = MQTT 3.1.1, 5 = MQTT 5
    client_id: str
    clean_start: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Connack:
    packet_type: ClassVar[int] = CONNACK
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = field(default_factory=_props)

    @property
    def accepted(self) -> bool:
        return self.reason_code == 0

    @property
    def reason_text(self) -> str:
        return reason_name(self.reason_code)

    @property
    def receive_maximum(self) -> int | None:
        """MQTT 5: how many QoS 1/2 messages the server takes unacknowledged."""
        return self.properties.get(Property.RECEIVE_MAXIMUM)

    @property
    def server_keepalive(self) -> int | None:
        """MQTT 5: the keepalive the server imposes."""
        return self.properties.get(Property.SERVER_KEEP_ALIVE)


@dataclass(frozen=True, slots=True)
class Publish:
    packet_type: ClassVar[int] = PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0  # 0 at QoS 0
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class _Ack:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Puback(_Ack):
    packet_type: ClassVar[int] = PUBACK


@dataclass(frozen=True, slots=True)
class Pubrec(_Ack):
    packet_type: ClassVar[int] = PUBREC


@dataclass(frozen=True, slots=True)
class Pubrel(_Ack):
    packet_type: ClassVar[int] = PUBREL


@dataclass(frozen=True, slots=True)
class Pubcomp(_Ack):
    packet_type: ClassVar[int] = PUBCOMP


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (the last three are MQTT 5)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_type: ClassVar[int] = SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = field(default_factory=_props)

    @property
    def topics(self) -> tuple[Subscription, ...]:
        return self.subscriptions


@dataclass(frozen=True, slots=True)
class Suback:
    packet_type: ClassVar[int] = SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]  # granted QoS (0-2) or a failure (>= 0x80), per filter
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_type: ClassVar[int] = UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_type: ClassVar[int] = UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # MQTT 5 only; 3.1.1 has none
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Pingreq:
    packet_type: ClassVar[int] = PINGREQ


@dataclass(frozen=True, slots=True)
class Pingresp:
    packet_type: ClassVar[int] = PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    packet_type: ClassVar[int] = DISCONNECT
    reason_code: int = 0
    properties: Properties = field(default_factory=_props)


@dataclass(frozen=True, slots=True)
class Auth:
    """MQTT 5 only."""

    packet_type: ClassVar[int] = AUTH
    reason_code: int = 0
    properties: Properties = field(default_factory=_props)


Packet = (Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe
          | Suback | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect | Auth)

def packet_name(packet: Any) -> str:
    return type(packet).__name__.upper()
