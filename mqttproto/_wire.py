"""MQTT's data types as bytes: variable byte integers, two-byte lengths, UTF-8 strings.

Strategy: decoders take ``(data, pos, end)`` and return ``(value, new_pos)``: no slice of
the packet is made until a value is taken, and every read checks ``end`` first, so bytes
that run short raise ``MqttProtocolError(MALFORMED_PACKET)``, never ``IndexError``.
UTF-8 strings are checked as the spec asks (well-formed, no U+0000; Python's decoder
already refuses surrogates); a bad one is MALFORMED_PACKET.
"""

from __future__ import annotations

import struct

from ._errors import MqttProtocolError

MALFORMED = 0x81
PROTOCOL = 0x82
MAX_VARINT = 268_435_455
MAX_UINT16 = 65535

pack_u16 = struct.Struct("!H").pack
pack_u32 = struct.Struct("!I").pack


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (1 to 4 bytes)."""
    if n < 128:
        if n < 0:
            raise ValueError(f"variable byte integer {n} is negative")
        return bytes((n,))
    if n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n > MAX_VARINT:
        raise ValueError(f"variable byte integer {n} exceeds the MQTT maximum")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while shift < 28:
        if pos >= end:
            raise MqttProtocolError(MALFORMED, "variable byte integer runs past the packet")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MqttProtocolError(MALFORMED, "variable byte integer longer than 4 bytes")


def read_u8(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise MqttProtocolError(MALFORMED, "byte runs past the packet")
    return data[pos], pos + 1


def read_u16(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MqttProtocolError(MALFORMED, "two-byte integer runs past the packet")
    return (data[pos] << 8) | data[pos + 1], pos + 2


def read_u32(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 4 > end:
        raise MqttProtocolError(MALFORMED, "four-byte integer runs past the packet")
    return int.from_bytes(data[pos:pos + 4], "big"), pos + 4


def read_binary(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MqttProtocolError(MALFORMED, "length of binary data runs past the packet")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise MqttProtocolError(MALFORMED, "binary data runs past the packet")
    return bytes(data[pos + 2:stop]), stop


def to_text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MqttProtocolError(MALFORMED, f"{what} is not valid UTF-8") from exc
    if "\x00" in text:
        raise MqttProtocolError(MALFORMED, f"{what} contains U+0000")
    return text


def read_str(data: bytes, pos: int, end: int, what: str = "string") -> tuple[str, int]:
    raw, pos = read_binary(data, pos, end)
    return to_text(raw, what), pos


def binary(raw: bytes) -> bytes:
    """Two-byte length, then ``raw``."""
    if len(raw) > MAX_UINT16:
        raise ValueError(f"MQTT strings and binary data are limited to 65535 bytes, "
                         f"got {len(raw)}")
    return pack_u16(len(raw)) + raw


def utf8(text: str) -> bytes:
    """A UTF-8 string field: two-byte length, then the encoded text."""
    return binary(text.encode())
