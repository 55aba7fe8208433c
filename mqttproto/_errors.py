"""The one exception a peer's bytes can raise.

Strategy: whatever is wrong with received bytes (a bad remaining length, a packet over the
size limit, invalid UTF-8, a property twice, a reason code the packet may not carry) ends
as ``MqttProtocolError`` carrying the MQTT 5 reason code a server or client answers with
(CONNACK or DISCONNECT; ``connack_return_code`` maps it for MQTT 3.1.1). No other
exception escapes ``PacketReader.feed`` or ``decode``: tests/mqttproto fuzz that.

Encoding our own packets is a different blame: a value out of range (a topic over 65,535
bytes, QoS 3) raises ``ValueError`` from ``encode``.
"""

from __future__ import annotations


class MqttProtocolError(Exception):
    """Received bytes are not a valid MQTT packet; ``reason_code`` says what to answer."""

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(f"{message} (reason code {reason_code:#04x})")
        self.reason_code = reason_code
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[int, str]]:  # picklable across processes
        return type(self), (self.reason_code, self.message)
