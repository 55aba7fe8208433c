"""Replication endpoint: a mirror writes records at *their* offsets into this broker.

Strategy: ingest assigns offsets and partitions by key; a byte-for-byte mirror needs the
opposite, so this endpoint appends records to one given partition only when the first
record's offset is the partition's end offset, and answers 409 with the end offset
otherwise. That one rule makes the broker target idempotent: a batch replayed after a
crash between write and checkpoint is refused with the position to resume from, and
nothing is written twice. The reply comes after the records are durable (G1).

    GET  /v1/replicate/{topic}/{partition}   -> 200 {"start_offset", "end_offset"}
    POST /v1/replicate/{topic}/{partition}   body CBOR {"records": [[offset, key, value,
         timestamp, [[name, value], ...]], ...]}, offsets consecutive
         -> 200 {"end_offset"}   409 {"error", "end_offset", "start_offset"}

Both need a token with the ``admin`` permission, checked before the body is read. The body
is bounded like an ingest body (``max_body_bytes``, ``max_records_per_request``; CBOR items
counted before decoding, off the event loop when large) and every field is checked
before anything is appended: offsets and timestamps in [0, 2**63), key and value byte
strings, at most ``MAX_HEADERS`` headers of a text name of at most
``MAX_HEADER_NAME_BYTES`` UTF-8 bytes and a byte-string value. Whatever is wrong is a 400
naming the record and field, never a 503 a mirror would retry forever. The target topic
must be written by the mirror alone (ingest into it would take the offsets the mirror needs).

An empty partition may start at any offset (the source's retention already deleted its
beginning): its empty log is replaced by one whose first segment is named after that
offset, which is how shared_log records an empty log's next offset on disk. A gap in the
middle of a partition that already holds records cannot be represented (409).
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from typing import Any

import cbor2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared_log import InvalidRecord, Log, LogError, Record, write_checkpoint
from shared_log._files import INDEX_SUFFIX, LOG_SUFFIX, fsync_dir, parse_segment_name, segment_name
from uplink import (
    MAX_HEADER_NAME_BYTES,
    MAX_HEADERS,
    MAX_OFFSET,
    MAX_TIMESTAMP,
    BodyTooLarge,
    MalformedBatch,
    load_cbor,
)

from .auth import AuthError
from .body_decode import INLINE_BYTES, decode_off_loop
from .errors import error
from .http_ingest import decode_limits, media_type, read_body
from .http_params import parse_index
from .storage import Partition, UnknownTopic

#: CBOR items per record a replication body may hold: a row is 6 plus 3 per header.
ITEMS_PER_RECORD = 16

CBOR = "application/cbor"
_locks: defaultdict[tuple[int, str, int], asyncio.Lock] = defaultdict(asyncio.Lock)


def _authorize(request: Request) -> Response | None:
    try:
        principal = request.app.state.broker.tokens.authenticate(
            request.headers.get("authorization"))
    except AuthError as exc:
        return error(401, str(exc))
    if not principal.may("admin"):
        return error(403, "replication needs a token with the admin permission")
    return None


def _partition(request: Request) -> Partition | Response:
    broker = request.app.state.broker
    topic = request.path_params["topic"]
    raw = request.path_params["partition"]
    index = parse_index(raw)
    if index is None:
        return error(400, f"partition must be a non-negative integer, got {raw[:40]!r}",
                     "partition")
    try:
        broker.ensure_topic_for_ingest(topic)
        return broker.store.partition(topic, index)
    except UnknownTopic as exc:
        return error(404, str(exc), "topic")


def _position(part: Partition) -> dict[str, int]:
    return {"start_offset": part.log.start_offset, "end_offset": part.log.end_offset}


async def replicate_position(request: Request) -> Response:
    if (denied := _authorize(request)) is not None:
        return denied
    part = _partition(request)
    if isinstance(part, Response):
        return part
    return JSONResponse(_position(part))


class BadRecords(ValueError):
    """A replication body that cannot be stored: 400 (or 413) naming the field."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


def decode_records(body: bytes, max_records: int = 10_000) -> list[tuple[int, Record]]:
    """Parse and validate the CBOR body; ``BadRecords`` names what is wrong."""
    try:
        doc = load_cbor(body, ITEMS_PER_RECORD * max_records + 64)
    except BodyTooLarge as exc:
        raise BadRecords("records", f"{exc.message}: at most {max_records} records "
                         "per request", 413) from None
    except MalformedBatch as exc:
        raise BadRecords("body", exc.message) from None
    rows = doc.get("records") if type(doc) is dict else None
    if type(rows) is not list or not rows:
        raise BadRecords("records", "must be a non-empty array")
    if len(rows) > max_records:
        raise BadRecords("records", f"{len(rows)} records, over the limit of {max_records}",
                         413)
    out: list[tuple[int, Record]] = []
    for i, row in enumerate(rows):
        off, rec = _record(row, f"records[{i}]")
        if out and off != out[-1][0] + 1:
            raise BadRecords(f"records[{i}].offset", "offsets must be consecutive")
        out.append((off, rec))
    return out


def _record(row: Any, where: str) -> tuple[int, Record]:
    if type(row) is not list or len(row) != 5:
        raise BadRecords(where, "must be [offset, key, value, timestamp, headers]")
    off, key, value, ts, headers = row
    if type(off) is not int or not 0 <= off <= MAX_OFFSET:
        raise BadRecords(f"{where}.offset", "must be an integer in [0, 2**63)")
    if type(key) is not bytes:
        raise BadRecords(f"{where}.key", "must be a byte string")
    if type(value) is not bytes:
        raise BadRecords(f"{where}.value", "must be a byte string")
    if type(ts) is not int or not 0 <= ts <= MAX_TIMESTAMP:
        raise BadRecords(f"{where}.timestamp", "must be an integer of ms in [0, 2**63)")
    if type(headers) is not list or len(headers) > MAX_HEADERS:
        raise BadRecords(f"{where}.headers", f"must be an array of at most {MAX_HEADERS} "
                         "[name, value] pairs")
    pairs = []
    for pair in headers:
        if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str
                or type(pair[1]) is not bytes):
            raise BadRecords(f"{where}.headers", "each header is [text name, byte value]")
        name = pair[0]
        if len(name) > MAX_HEADER_NAME_BYTES // 4 and len(
                name.encode("utf-8", "surrogatepass")) > MAX_HEADER_NAME_BYTES:
            raise BadRecords(f"{where}.headers",
                             f"a header name is at most {MAX_HEADER_NAME_BYTES} UTF-8 bytes")
        pairs.append((name, pair[1]))
    return off, Record(key, value, ts, tuple(pairs))


def encode_records(records: list[Any]) -> bytes:
    """The POST body for StoredRecords (used by the broker mirror target)."""
    return cbor2.dumps({"records": [
        [r.offset, r.key, r.value, r.timestamp, [[n, v] for n, v in r.headers]]
        for r in records]})


def rebase_empty(part: Partition, base: int) -> None:
    """Make an empty partition's next offset ``base`` (see the module docstring)."""
    old = part.log
    if old.size_bytes or old.start_offset != old.end_offset or old.segment_count != 1:
        raise ValueError("only an empty partition can be rebased")
    directory, config = old.directory, old.config
    old.close()
    for name in os.listdir(directory):
        if (parse_segment_name(name, LOG_SUFFIX) is not None
                or parse_segment_name(name, INDEX_SUFFIX) is not None):
            os.unlink(directory / name)
    # A crash here leaves a directory without segments: it reopens empty at 0, as before.
    (directory / segment_name(base, LOG_SUFFIX)).touch()
    write_checkpoint(directory / "recovery-point", {"offset": base})
    fsync_dir(directory)
    part.log = Log(directory, config)


async def replicate_append(request: Request) -> Response:
    if (denied := _authorize(request)) is not None:
        return denied
    part = _partition(request)
    if isinstance(part, Response):
        return part
    if media_type(request) != CBOR:
        return error(415, f"Content-Type must be {CBOR}", "content-type")
    config = request.app.state.broker.config
    limit = config.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        return error(413, f"body larger than {limit} bytes", "body")
    max_records = decode_limits(config)[1]
    try:
        records = await decode_off_loop(lambda: decode_records(body, max_records),
                                        len(body) <= INLINE_BYTES)
    except BadRecords as exc:
        return error(exc.status, exc.message, exc.field)
    first = records[0][0]
    async with _locks[(id(request.app), part.topic, part.index)]:
        log = part.log
        if first != log.end_offset:
            empty = log.start_offset == log.end_offset and not log.size_bytes
            if not (empty and first > log.end_offset):
                return error(409, f"partition continues at offset {log.end_offset}, not {first}",
                             "offset", **_position(part))
            try:
                await asyncio.to_thread(rebase_empty, part, first)
            except (ValueError, OSError, LogError) as exc:
                return error(503, f"cannot start the partition at {first}: {exc}")
            log = part.log
        try:
            _first, last = log.append([r for _o, r in records])
        except InvalidRecord as exc:  # checked above; a retry could never help
            return error(400, f"records cannot be stored: {exc}", "records")
        except (LogError, OSError) as exc:
            resp = error(503, f"not durable now, retry: {exc}")
            resp.headers["Retry-After"] = "1"
            return resp
        try:
            await log.wait_durable_async(last)
        except (LogError, OSError) as exc:
            resp = error(503, f"not durable now, retry: {exc}")
            resp.headers["Retry-After"] = "1"
            return resp
    part.notify()
    return JSONResponse({"end_offset": last + 1})
