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

Both need a token with the ``admin`` permission. The target topic must be written by the
mirror alone (ingest into it would take the offsets the mirror needs).

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

from shared_log import Log, LogError, Record, write_checkpoint
from shared_log._files import INDEX_SUFFIX, LOG_SUFFIX, fsync_dir, parse_segment_name, segment_name

from .auth import AuthError
from .errors import error
from .http_ingest import read_body
from .storage import Partition, UnknownTopic

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
    try:
        index = int(request.path_params["partition"])
        broker.ensure_topic_for_ingest(topic)
        return broker.store.partition(topic, index)
    except ValueError:
        return error(400, "partition must be an integer", "partition")
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


def decode_records(body: bytes) -> list[tuple[int, Record]]:
    """Parse and validate the CBOR body; ValueError names what is wrong."""
    try:
        doc = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ValueError(f"body is not CBOR: {exc}") from exc
    rows = doc.get("records") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError("records must be a non-empty array")
    out: list[tuple[int, Record]] = []
    for i, row in enumerate(rows):
        try:
            off, key, value, ts, headers = row
            hdrs = tuple((str(n), bytes(v)) for n, v in headers)
            ok = (isinstance(off, int) and off >= 0 and isinstance(key, bytes)
                  and isinstance(value, bytes) and isinstance(ts, int)
                  and all(isinstance(v, bytes) for _n, v in headers))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"records[{i}] must be [offset, key, value, timestamp, headers]")
        if out and off != out[-1][0] + 1:
            raise ValueError(f"records[{i}]: offsets must be consecutive")
        out.append((off, Record(key, value, ts, hdrs)))
    return out


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
    ctype = request.headers.get("content-type", CBOR).split(";")[0].strip()
    if ctype != CBOR:
        return error(415, f"Content-Type must be {CBOR}", "content-type")
    limit = request.app.state.broker.config.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        return error(413, f"body larger than {limit} bytes", "body")
    try:
        records = decode_records(body)
    except ValueError as exc:
        return error(400, str(exc), "records")
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
            await log.wait_durable_async(last)
        except (LogError, OSError) as exc:
            resp = error(503, f"not durable now, retry: {exc}")
            resp.headers["Retry-After"] = "1"
            return resp
    part.notify()
    return JSONResponse({"end_offset": last + 1})
