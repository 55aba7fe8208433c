"""Consumer endpoints: topic metadata and fetch by offset with long-poll.

Strategy: a fetch reads columns from the partition's log in a worker thread (the log is
file I/O; a tail of at most ``INLINE_READ_RECORDS`` just written is read on the event
loop: it is in the page cache, and a thread hop would cost a live consumer more than the
read) and never above the high watermark (``Log.durable_offset``), so a consumer
never sees a record that a crash could still take back. A fetch at the end with
``wait_ms`` parks on ``Partition.waiter()``, which ingest wakes after its records are
durable; the waiter is registered *before* the second read, so a wake-up between the read
and the wait is not lost. Out-of-range offsets answer 416 with the valid range, never an
empty page, and offsets lost to corruption are listed in ``skipped``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared_log import ColumnFetch, RecordColumns

from .. import record_codec as codec
from ..broker import Broker
from ..errors import Problem
from ..storage import LogError, OffsetOutOfRange, PartitionLog, PartitionStoreAPI, UnknownTopic
from .errors import endpoint
from .params import (
    CBOR,
    authorize,
    check_topic,
    choice_param,
    int_param,
    partition_of,
    wants_json,
)

MAX_OFFSET = 2**63 - 1
MAX_RECORDS = 100_000
DEFAULT_MAX_BYTES = 4 << 20
MAX_BYTES = 64 << 20
MAX_WAIT_MS = 30_000


def out_of_range(part: PartitionLog, offset: int, start: int, end: int) -> Problem:
    return Problem(416, f"offset {offset} is out of range for {part.topic}/{part.index}: "
                        f"valid offsets are {start} (earliest) to {end} (the end, next to be "
                        "written)", "offset", start_offset=start, end_offset=end)


def _read(part: PartitionLog, offset: int, max_records: int, max_bytes: int
          ) -> tuple[ColumnFetch, int, int]:
    hw = part.durable_offset  # read first: the fetch below never passes it
    try:
        res = part.fetch_columns(offset, max_records, max_bytes, end=hw)
    except OffsetOutOfRange as exc:
        raise out_of_range(part, offset, exc.start_offset, min(hw, exc.end_offset)) from exc
    return res, part.start_offset, hw


#: a read of at most this many records behind the high watermark runs on the event loop
INLINE_READ_RECORDS = 1000


async def read_partition(broker: Broker, part: PartitionLog, offset: int, max_records: int,
                         max_bytes: int, wait_ms: int) -> tuple[ColumnFetch, int, int]:
    """Read from ``offset``; when nothing is there, wait up to ``wait_ms`` for new data.

    This is where a fetch (and a stream) gets its records."""
    metrics = broker.metrics
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000
    while True:
        try:
            if 0 <= part.durable_offset - offset <= INLINE_READ_RECORDS:
                res, start, hw = _read(part, offset, max_records, max_bytes)
            else:
                res, start, hw = await asyncio.to_thread(_read, part, offset, max_records,
                                                         max_bytes)
        except LogError as exc:
            raise Problem(503, f"partition {part.topic}/{part.index} is unreadable now: {exc}"
                          ) from exc
        remaining = deadline - loop.time()
        if len(res.columns) or res.skipped or remaining <= 0:
            return res, start, hw
        woken = part.waiter()
        if part.durable_offset > offset:
            part.forget(woken)
            continue  # data arrived between the read and the registration
        metrics.fetch_waiting.inc()
        try:
            async with asyncio.timeout(remaining):  # not wait_for: on 3.11 it can
                await woken.wait()  # swallow a cancel that races the wake-up
        except TimeoutError:
            deadline = 0.0  # one last read, then answer (possibly with nothing)
        finally:
            metrics.fetch_waiting.dec()
            if not woken.is_set():
                part.forget(woken)


@endpoint(measured=lambda b: (b.metrics.fetch_requests, b.metrics.fetch_latency))
async def fetch(request: Request, broker: Broker) -> Response:
    check_topic(authorize(broker, request, "read"), request.path_params["topic"])
    part = partition_of(broker.store, request)
    offset = int_param(request, "offset", None, 0, MAX_OFFSET)
    max_records = int_param(request, "max_records", 1000, 1, MAX_RECORDS)
    max_bytes = int_param(request, "max_bytes", DEFAULT_MAX_BYTES, 1, MAX_BYTES)
    wait_ms = int_param(request, "wait_ms", 0, 0, MAX_WAIT_MS)
    as_json = wants_json(request)
    encoding = choice_param(request, "encoding", codec.ENCODINGS)
    res, start, hw = await read_partition(broker, part, offset, max_records, max_bytes,
                                          wait_ms)
    head = codec.meta(part.topic, part.index, res, start, hw)
    count_fetch(broker, part, res)
    if as_json:
        body = await _off_loop(codec.encode_json, head, res.columns, encoding)
    else:
        body = await _off_loop(codec.encode_cbor, head, res.columns)
    broker.metrics.fetch_bytes.inc(len(body))
    # The next offset in a header too: a client can send its next fetch as soon as it has
    # the headers, while it still reads and decodes this body (client.transport.open_fetch).
    return Response(body, media_type="application/json" if as_json else CBOR,
                    headers={"X-Next-Offset": str(res.next_offset), "X-End-Offset": str(hw)})


async def _off_loop(encode: Callable[..., bytes], head: dict[str, Any], cols: RecordColumns,
                    *args: Any) -> bytes:
    """Small answers are encoded on the loop; large ones in a thread (no stalled ingest)."""
    if len(cols) < 2000:
        return encode(head, cols, *args)
    return await asyncio.to_thread(encode, head, cols, *args)


def count_fetch(broker: Broker, part: PartitionLog, res: ColumnFetch) -> None:
    m = broker.metrics
    if len(res.columns):
        m.fetch_records.labels(part.topic).inc(len(res.columns))
    if res.skipped:
        m.fetch_skipped.labels(part.topic).inc(sum(s.count for s in res.skipped))


def _topic_summary(store: PartitionStoreAPI, name: str) -> dict[str, Any]:
    cfg = store.topic_config(name)
    return {"name": name, "partitions": len(store.partitions(name)),
            "retention_bytes": cfg.retention_bytes, "retention_ms": cfg.retention_ms}


@endpoint
async def list_topics(request: Request, broker: Broker) -> Response:
    principal = authorize(broker, request, "read")
    store = broker.store
    return JSONResponse({"topics": [_topic_summary(store, t) for t in store.topics()
                                    if principal.may_topic(t)]})


@endpoint
async def describe_topic(request: Request, broker: Broker) -> Response:
    principal = authorize(broker, request, "read")
    store = broker.store
    topic = request.path_params["topic"]
    check_topic(principal, topic)
    try:
        body = _topic_summary(store, topic)
        parts = store.partitions(topic)
    except UnknownTopic as exc:
        raise Problem(404, str(exc), "topic") from exc
    body["partitions"] = [
        {"partition": p.index, "start_offset": p.start_offset,
         "end_offset": p.durable_offset, "size_bytes": p.size_bytes} for p in parts]
    return JSONResponse(body)
