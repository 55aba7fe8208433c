"""Splits a received byte stream into packets, with bounded memory.

Strategy: ``feed(data)`` decodes every complete packet in the bytes received so far and
keeps only the tail of an incomplete one. The fixed header is checked as soon as it is
complete: a bad type or flags, a remaining length over 4 bytes, or a declared size over
``max_packet_size`` raises before a byte of the body is kept, so a peer cannot make the
reader hold more than it allows.

Bounds (per reader, i.e. per connection):

* between calls the reader holds at most ``max(max_packet_size, 5)`` bytes: one
  incomplete packet whose whole size (fixed header included, as MQTT 5's Maximum Packet
  Size counts it) is at most ``max_packet_size``, or up to 5 bytes of a fixed header;
* during a call, that plus the caller's ``data`` (the caller bounds its reads);
* the packets a call returns take at most ~32 bytes of Python objects per byte fed
  (the worst case is a stream of minimal 5-byte PUBLISHes, one object each; a packet's
  lists grow with its size, user properties are capped by ``MAX_USER_PROPERTIES``), so
  a caller bounds that memory and the decoding time by the size of what it feeds.

Roles: a server's reader starts with ``version=None``; the first packet must be CONNECT
(anything else is PROTOCOL_ERROR before it is buffered) and its protocol level becomes
the reader's ``version``; a second CONNECT is PROTOCOL_ERROR. A client passes the version
it connected with.

Errors: ``MqttProtocolError`` (with the reason code to answer), whose ``packets`` attribute
holds the packets decoded from the same ``feed`` before the bad one, so a caller can act
on them before it disconnects. After an error the reader is not usable: close the
connection. Not thread-safe; one reader per connection.
"""

from __future__ import annotations

from ._decode import PublishFields, check_first_byte, decode, decode_publish, publish_fields
from ._errors import MqttProtocolError
from ._packets import CONNECT, PUBACK, PUBLISH, V5, V311, Connect, Packet, Puback
from ._wire import MALFORMED, PROTOCOL

PACKET_TOO_LARGE = 0x95
#: the largest packet MQTT can frame: 1 + 4 header bytes + 268,435,455
MAX_PACKET_SIZE = 268_435_460
#: successful PUBACKs by packet id: immutable values, so one per id serves every
#: connection (a publisher receives one per reading; at most 65,535 of them)
_PUBACKS: dict[int, Puback] = {}


class PacketReader:
    """Bytes in, packets out; see the module docstring for the bounds."""

    __slots__ = ("_buf", "_fields", "_need", "max_packet_size", "version")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE,
                 version: int | None = None, *, fields: bool = False) -> None:
        """``fields``: return each PUBLISH as a ``PublishFields`` tuple, not a ``Publish``
        (a server's hot path; every check is the same)."""
        if not 2 <= max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(f"max_packet_size {max_packet_size} is not in 2..{MAX_PACKET_SIZE}")
        if version not in (None, V311, V5):
            raise ValueError(f"protocol version {version!r} is not 4 or 5")
        self.max_packet_size = max_packet_size
        self.version = version
        self._buf = bytearray()
        self._fields = fields
        #: bytes the incomplete packet in ``_buf`` needs before it is worth parsing again
        self._need = 0

    def buffered(self) -> int:
        """Bytes of an incomplete packet held until the rest arrives."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet | PublishFields]:
        """The packets completed by ``data``, in order."""
        buf = self._buf
        if buf:
            # Appending is amortised O(len(data)) and nothing is parsed until the packet
            # is complete: a peer dripping a large packet byte by byte costs linear time.
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        packets: list[Packet | PublishFields] = []
        try:
            pos = self._split(data, packets)
        except MqttProtocolError as exc:
            self._buf = bytearray()
            exc.packets = packets  # type: ignore[attr-defined]
            raise
        if pos < len(data):
            self._buf = bytearray(memoryview(data)[pos:])
        return packets

    def _split(self, data: bytes, packets: list[Packet | PublishFields]) -> int:
        end = len(data)
        pos = 0
        limit = self.max_packet_size
        version = self.version
        append = packets.append
        while pos < end:
            first = data[pos]
            ptype = first >> 4
            if ptype != PUBLISH or version is None:
                check_first_byte(first)
                if (version is None) != (ptype == CONNECT):
                    raise MqttProtocolError(PROTOCOL, "CONNECT must be the first packet, "
                                                      "and only the first")
            i = pos + 1
            length = 0
            shift = 0
            while True:
                if i >= end:
                    self._need = end - pos + 1  # the fixed header is not complete yet
                    return pos
                byte = data[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift == 28:
                    raise MqttProtocolError(MALFORMED, "remaining length over 4 bytes")
            stop = i + length
            if stop - pos > limit:
                raise MqttProtocolError(PACKET_TOO_LARGE, f"packet of {stop - pos} bytes "
                                                          f"exceeds the limit of {limit}")
            if stop > end:
                self._need = stop - pos  # wait for the rest of the body
                return pos
            if ptype == PUBLISH and version is not None:
                append(publish_fields(first, data, i, stop, version) if self._fields
                       else decode_publish(first, data, i, stop, version))
            elif ptype == PUBACK and length == 2 and version is not None:
                pid = (data[i] << 8) | data[i + 1]
                if not pid:
                    raise MqttProtocolError(PROTOCOL, "packet identifier 0")
                puback = _PUBACKS.get(pid)
                if puback is None:
                    puback = _PUBACKS[pid] = Puback(pid)
                append(puback)
            else:
                packet = decode(first, data[i:stop], version or V311)
                if isinstance(packet, Connect):
                    self.version = version = packet.protocol_level
                append(packet)
            pos = stop
        return pos
