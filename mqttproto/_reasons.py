"""MQTT 5 reason codes, which packet may carry which, and the MQTT 3.1.1 mapping.

Strategy: the tables are data (spec section 2.4 and each packet's reason code list);
``decode`` looks a received code up in ``ALLOWED`` and ``encode`` uses the 3.1.1
mappings, so a rule lives in one place. 0x00 has several names (success, normal
disconnection, granted QoS 0): they are aliases of one value.
"""

from __future__ import annotations

from enum import IntEnum


class ReasonCode(IntEnum):
    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


def reason_name(code: int) -> str:
    """A readable name for ``code`` ("not authorized"), or its hex value."""
    try:
        return ReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"reason code {code:#04x}"


_PUBACK = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL = frozenset({0x00, 0x92})

#: packet type -> the reason codes MQTT 5 lets it carry
ALLOWED: dict[int, frozenset[int]] = {
    # 0x99 (the will's payload format): in section 3.2.2.2's list, not in section 2.4's
    2: frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
                  0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}),
    4: _PUBACK,
    5: _PUBACK,
    6: _PUBREL,
    7: _PUBREL,
    9: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    11: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    # 0x8C: listed for DISCONNECT in the table of section 2.4, not in section 3.14's
    14: frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F,
                   0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
                   0x9E, 0x9F, 0xA0, 0xA1, 0xA2}),
    15: frozenset({0x00, 0x18, 0x19}),
}

#: MQTT 3.1.1 SUBACK return codes (granted QoS or failure)
SUBACK_V311 = frozenset({0x00, 0x01, 0x02, 0x80})

#: MQTT 3.1.1 CONNACK return code -> the MQTT 5 reason code with the same meaning
CONNACK_V311_TO_V5 = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_V5_TO_V311 = {v: k for k, v in CONNACK_V311_TO_V5.items()}


def connack_return_code(reason_code: int) -> int:
    """The MQTT 3.1.1 CONNACK return code for an MQTT 5 reason code.

    Exact for the six codes 3.1.1 has; a refusal it has no word for becomes 5 (not
    authorized) when it is about the client (banned, quota) and 3 (server unavailable)
    otherwise, the nearest meanings (MQTT 5 spec, appendix on 3.1.1 compatibility)."""
    code = _V5_TO_V311.get(reason_code)
    if code is not None:
        return code
    if reason_code in (0x8A, 0x8C, 0x97, 0x9F):
        return 5
    return 3
