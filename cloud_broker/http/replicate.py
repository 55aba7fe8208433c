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
must be written by the mirror alone (ingest into it would take the offsets the mirror
needs): the first replication request claims it (``trust.check_replication``), and the
token's topic scope is checked before anything else. The body codec is ``mirrors.replica_codec``.

An empty partition may start at any offset (the source's retention already deleted its
beginning): the store resets it to that base offset (``Partition.rebase_empty``). A gap in the
middle of a partition that already holds records cannot be represented (409).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..broker import Broker
from ..errors import Problem, unavailable
from ..ingest import INLINE_BYTES, decode_off_loop
from ..mirrors.replica_codec import CBOR, BadRecords, decode_records
from ..storage import InvalidRecord, LogError, Partition, UnknownTopic
from ..trust import check_replication
from .errors import endpoint
from .ingest import decode_limits
from .params import index_of, media_type, principal_of, read_body

_locks: defaultdict[tuple[int, str, int], asyncio.Lock] = defaultdict(asyncio.Lock)


def _partition(request: Request, broker: Broker) -> Partition:
    """The partition of an authorized replication request (401, 403, 400, 404)."""
    principal = principal_of(broker, request)
    if not principal.may("admin"):
        raise Problem(403, "replication needs a token with the admin permission")
    topic = request.path_params["topic"]
    check_replication(broker, principal, topic)
    index = index_of(request)
    try:
        broker.ensure_topic_for_ingest(topic)
        return broker.store.partition(topic, index)
    except UnknownTopic as exc:
        raise Problem(404, str(exc), "topic") from exc


def _position(part: Partition) -> dict[str, int]:
    return {"start_offset": part.start_offset, "end_offset": part.end_offset}


@endpoint
async def replicate_position(request: Request, broker: Broker) -> Response:
    return JSONResponse(_position(_partition(request, broker)))


@endpoint
async def replicate_append(request: Request, broker: Broker) -> Response:
    part = _partition(request, broker)
    if media_type(request) != CBOR:
        raise Problem(415, f"Content-Type must be {CBOR}", "content-type")
    limit = broker.config.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        raise Problem(413, f"body larger than {limit} bytes", "body")
    max_records = decode_limits(broker.config)[1]
    try:
        records = await decode_off_loop(lambda: decode_records(body, max_records),
                                        len(body) <= INLINE_BYTES)
    except BadRecords as exc:
        raise Problem(exc.status, exc.message, exc.field) from exc
    first = records[0][0]
    async with _locks[(id(request.app), part.topic, part.index)]:
        if first != part.end_offset:
            empty = part.start_offset == part.end_offset and not part.size_bytes
            if not (empty and first > part.end_offset):
                raise Problem(409, f"partition continues at offset {part.end_offset}, not "
                              f"{first}", "offset", **_position(part))
            try:
                await asyncio.to_thread(part.rebase_empty, first)
            except (ValueError, OSError, LogError) as exc:
                raise Problem(503, f"cannot start the partition at {first}: {exc}") from exc
        try:
            _first, last = part.append([r for _o, r in records])
        except InvalidRecord as exc:  # checked above; a retry could never help
            raise Problem(400, f"records cannot be stored: {exc}", "records") from exc
        except (LogError, OSError) as exc:
            raise unavailable(f"not durable now, retry: {exc}") from exc
        try:
            await part.wait_durable(last)
        except (LogError, OSError) as exc:
            raise unavailable(f"not durable now, retry: {exc}") from exc
    part.notify()
    return JSONResponse({"end_offset": last + 1})


__all__ = ["replicate_append", "replicate_position"]
