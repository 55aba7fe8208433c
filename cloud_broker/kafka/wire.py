"""Kafka frames and messages: kio's generated types behind three functions.

Strategy: the message types come from kio (Kafka's JSON schemas generated as frozen
dataclasses, with a native reader); this module is the only one that touches kio.
``parse_request`` turns one frame into (header, request) or raises ``BadRequest``;
handlers answer with plain dicts whose keys are the schema's field names, and
``encode_response`` builds the dataclasses of the negotiated version from them (fields a
version lacks are dropped, missing ones take the schema default or zero), so one handler
serves every version it advertises. ``SUPPORTED`` is the advertised range per API;
flexible encodings only where a client needs them (ApiVersions v3, whose answer header
stays v0 as Kafka's does).
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import types
import typing
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as HeaderV1
from kio.schema.request_header.v2.header import RequestHeader as HeaderV2
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError

#: api key -> (name, min version, max version) we answer
SUPPORTED: dict[int, tuple[str, int, int]] = {
    0: ("produce", 3, 3),  # advertised so librdkafka uses record batch v2; refused
    1: ("fetch", 4, 11),
    2: ("list_offsets", 1, 5),
    3: ("metadata", 1, 8),
    8: ("offset_commit", 2, 7),
    9: ("offset_fetch", 1, 5),
    10: ("find_coordinator", 0, 2),
    11: ("join_group", 0, 5),
    12: ("heartbeat", 0, 3),
    13: ("leave_group", 0, 3),
    14: ("sync_group", 0, 3),
    17: ("sasl_handshake", 0, 1),
    18: ("api_versions", 0, 3),
    36: ("sasl_authenticate", 0, 1),
}
API_VERSIONS = 18
_SIZE = struct.Struct(">i")
_HEADER_V0 = struct.Struct(">hhi")


class BadRequest(Exception):
    """A frame that is not a request we can read: the connection is closed."""


class UnsupportedVersion(Exception):
    """A known API at a version we do not speak; ``api_key``, ``correlation_id`` kept."""

    def __init__(self, api_key: int, version: int, correlation_id: int) -> None:
        super().__init__(f"api {api_key} v{version} is not supported")
        self.api_key, self.version, self.correlation_id = api_key, version, correlation_id


@cache
def _types(api_key: int, version: int) -> tuple[type, type]:
    return load_request_schema(api_key, version), load_response_schema(api_key, version)


@cache
def _reader(cls: type) -> Any:
    return entity_reader(cls)


@cache
def _writer(cls: type) -> Any:
    return entity_writer(cls)


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api key, version, correlation id) of a frame; BadRequest when shorter."""
    if len(frame) < _HEADER_V0.size:
        raise BadRequest("frame shorter than a request header")
    return _HEADER_V0.unpack_from(frame)


def parse_request(frame: bytes) -> tuple[Any, Any]:
    """(header, request) of one frame (the size prefix removed)."""
    key, version, corr = peek_header(frame)
    spec = SUPPORTED.get(key)
    if spec is None or not spec[1] <= version <= spec[2]:
        raise UnsupportedVersion(key, version, corr)
    req_cls, _ = _types(key, version)
    header_cls = HeaderV2 if req_cls.__flexible__ else HeaderV1
    try:
        header, used = _reader(header_cls)(frame, 0)
        request, n = _reader(req_cls)(frame, used)
    except (SerialError, ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
        # kio's reader on hostile bytes: its own errors, and a KeyError for an unknown
        # tagged field (found by the fuzz test); all of them mean "not a request"
        raise BadRequest(f"api {key} v{version}: {exc}") from exc
    if used + n != len(frame):
        raise BadRequest(f"api {key} v{version}: {len(frame) - used - n} bytes left over")
    return header, request


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _zero(f: dataclasses.Field[Any], hint: Any) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    kind = f.metadata.get("kafka_type", "")
    origin = typing.get_origin(hint)
    if origin is tuple or (origin in (typing.Union, types.UnionType)
                           and type(None) in typing.get_args(hint)):
        return () if origin is tuple else None
    if kind.startswith("timedelta"):
        return datetime.timedelta(0)
    if kind == "error_code":
        return ErrorCode.none
    if kind == "bool":
        return False
    if kind == "string":
        return ""
    if kind in ("bytes", "records"):
        return b""
    return 0


def build(cls: type, data: dict[str, Any]) -> Any:
    """A kio dataclass of ``cls`` from a plain dict (see the module docstring)."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.name not in data:
            kwargs[f.name] = _zero(f, hint)
            continue
        kwargs[f.name] = _convert(f, hint, data[f.name])
    return cls(**kwargs)


def _convert(f: dataclasses.Field[Any], hint: Any, value: Any) -> Any:
    if value is None:
        return None
    kind = f.metadata.get("kafka_type", "")
    if kind.startswith("timedelta"):
        return datetime.timedelta(milliseconds=value)
    if kind == "error_code":
        return ErrorCode(value)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    inner = hint if not args or typing.get_origin(hint) is tuple else args[0]
    if typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        if dataclasses.is_dataclass(item):
            return tuple(build(item, v) for v in value)  # type: ignore[arg-type]
        return tuple(value)
    if dataclasses.is_dataclass(inner):
        return build(inner, value)  # type: ignore[arg-type]
    return value


class Chunks:
    """Bytes kept as their pieces (a Fetch answer's record batches): ``len`` is their
    total size, which is all kio's writer of a non-flexible ``records`` field asks
    before handing the value to ``_Pieces.write``, which keeps the pieces as they are.
    Joined, a ~8 MiB answer is copied once more into fresh pages (~40 page faults per
    1 000 records)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes]) -> None:
        self.parts, self.size = parts, sum(map(len, parts))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


class _Pieces:
    """What kio's writers write into (they only call ``write``): the pieces, kept. A
    Fetch answer holds megabytes of records; grown in a BytesIO and copied out they cost
    ~0.2 us per record, mostly the kernel's page faults. Kept as pieces they go to the
    socket with ``writelines`` (uvloop writes them as they are, with no copy)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, b: bytes | Chunks) -> int:
        if type(b) is Chunks:
            self.parts += b.parts
        else:
            self.parts.append(b)  # type: ignore[arg-type]
        self.size += len(b)
        return len(b)


def response_frame(api_key: int, version: int, correlation_id: int,
                   data: dict[str, Any]) -> list[bytes]:
    """The whole answer frame as pieces (``b"".join`` them for the bytes): size,
    response header, body of ``version``."""
    _, resp_cls = _types(api_key, version)
    buf = _Pieces()
    buf.write(correlation_id.to_bytes(4, "big", signed=True))
    if resp_cls.__flexible__ and api_key != API_VERSIONS:
        buf.write(b"\0")  # response header v1: no tagged fields
    _writer(resp_cls)(buf, build(resp_cls, data))
    return [_SIZE.pack(buf.size), *buf.parts]


def api_versions_v0_frame(correlation_id: int, error: int) -> list[bytes]:
    """ApiVersions v0 (what Kafka answers a too-new ApiVersions request with)."""
    return response_frame(API_VERSIONS, 0, correlation_id,
                          {"error_code": error, "api_keys": api_keys()})


def api_keys() -> list[dict[str, int]]:
    return [{"api_key": k, "min_version": lo, "max_version": hi}
            for k, (_, lo, hi) in sorted(SUPPORTED.items())]


__all__ = ["API_VERSIONS", "SUPPORTED", "BadRequest", "Chunks", "UnsupportedVersion",
           "api_keys", "api_versions_v0_frame", "build", "parse_request", "peek_header",
           "response_frame"]
