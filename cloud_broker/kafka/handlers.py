"""The data APIs: Metadata, ListOffsets, Fetch, and Produce (refused).

Strategy: each handler takes the broker, the connection's principal and a kio request,
and returns a plain dict (``wire.encode_response`` picks the version's fields). Partitions
are read only through ``PartitionLog`` (never past ``durable_offset``), on a worker thread
when the read is large, and a Fetch with nothing to answer long-polls on the partitions'
``waiter()`` events until ``max_wait`` (capped at ``MAX_WAIT_MS``). Topic scopes are the
token's: a topic it may not read is ``TOPIC_AUTHORIZATION_FAILED`` and absent from a full
Metadata listing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..auth import Principal
from ..storage import LogError, OffsetOutOfRange, PartitionLog, UnknownTopic
from .readahead import ReadAhead
from .records import encode_batch_pieces
from .service import BrokerView
from .wire import Chunks

NONE, OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 3
KAFKA_STORAGE_ERROR, TOPIC_AUTHORIZATION_FAILED, POLICY_VIOLATION = 56, 29, 44
NODE_ID = 0
MAX_WAIT_MS = 30_000
MAX_FETCH_RECORDS = 100_000  # per partition per Fetch: bounds one answer's memory
MAX_FETCH_BYTES = 64 << 20  # one Fetch answer, whatever max_bytes the client asks
INLINE_READ_RECORDS = 512  # smaller reads stay on the event loop
SCAN_CHUNK = 10_000


def millis(v: Any) -> int:
    """kio decodes durations as timedelta; older request versions give plain ints."""
    return int(v.total_seconds() * 1000) if hasattr(v, "total_seconds") else int(v)


def metadata(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    cfg = broker.config.kafka
    assert cfg is not None
    names = broker.store.topics() if req.topics is None else [t.name for t in req.topics]
    topics = []
    for name in names:
        if not who.may_topic(name):
            if req.topics is not None:
                topics.append({"name": name, "error_code": TOPIC_AUTHORIZATION_FAILED})
            continue
        try:
            parts = broker.store.partitions(name)
        except UnknownTopic:
            topics.append({"name": name, "error_code": UNKNOWN_TOPIC_OR_PARTITION})
            continue
        topics.append({"name": name, "partitions": [
            {"partition_index": p.index, "leader_id": NODE_ID, "replica_nodes": [NODE_ID],
             "isr_nodes": [NODE_ID]} for p in parts]})
    return {"brokers": [{"node_id": NODE_ID, "host": cfg.advertised_host,
                         "port": cfg.advertised_port}],
            "cluster_id": "edgestream", "controller_id": NODE_ID, "topics": topics}


def _partition(broker: BrokerView, who: Principal, topic: str, index: int
               ) -> tuple[PartitionLog | None, int]:
    if not who.may_topic(topic):
        return None, TOPIC_AUTHORIZATION_FAILED
    try:
        return broker.store.partition(topic, index), NONE
    except UnknownTopic:
        return None, UNKNOWN_TOPIC_OR_PARTITION


def _offset_for_time(part: PartitionLog, ts: int) -> tuple[int, int]:
    """The first offset whose timestamp is >= ``ts`` (in a thread), or offset and
    timestamp -1 when there is none: Kafka's answer since ListOffsets v1 (KIP-79), which
    clients read as "no such offset" (kafka-python's ``offsets_for_times`` gives None,
    librdkafka the logical end). Answering the high watermark instead made such a
    client take it for a record at that offset with timestamp -1.

    A stored batch's header holds its newest timestamp: every batch whose newest record
    is older than ``ts`` is passed over without decoding a record (1,000,000 records in
    batches of 1,000, the answer near the end: 1.9 s decoding every record, 0.09 s
    reading the batches). The first
    record at or after ``ts`` is in the first batch that is not, so the records are read
    from there (a batch whose records cannot be read is skipped as ``fetch_columns``
    skips it)."""
    offset, end = part.start_offset, part.durable_offset
    while offset < end:
        found = part.fetch_batches(offset, SCAN_CHUNK, 64 << 20, end=end)
        hit = next((b.first for b in found.batches if b.info.max_timestamp >= ts), None)
        if hit is not None:
            offset = hit
            break
        if found.next_offset <= offset:
            return -1, -1
        offset = found.next_offset
    while offset < end:
        res = part.fetch_columns(offset, SCAN_CHUNK, 64 << 20, end=end)
        for off, t in zip(res.columns.offsets(), res.columns.timestamps, strict=True):
            if t >= ts:
                return off, t
        if res.next_offset <= offset:
            break
        offset = res.next_offset
    return -1, -1


async def list_offsets(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            part, err = _partition(broker, who, t.name, p.partition_index)
            out: dict[str, Any] = {"partition_index": p.partition_index, "error_code": err,
                                   "timestamp": -1, "offset": -1}
            if part is not None:
                ts = p.timestamp
                try:
                    if ts == -1:
                        out["offset"] = part.durable_offset
                    elif ts == -2:
                        out["offset"] = part.start_offset
                    else:
                        out["offset"], out["timestamp"] = await asyncio.to_thread(
                            _offset_for_time, part, ts)
                except (LogError, OffsetOutOfRange):
                    out["error_code"] = KAFKA_STORAGE_ERROR
            parts.append(out)
        topics.append({"name": t.name, "partitions": parts})
    return {"topics": topics}


def _read(part: PartitionLog, offset: int, max_bytes: int, compression: str
          ) -> tuple[Chunks, int, int]:
    """(records, high watermark, next offset)."""
    hw = part.durable_offset
    res = part.fetch_batches(offset, MAX_FETCH_RECORDS, max(1, max_bytes), end=hw)
    return Chunks(encode_batch_pieces(res.batches, compression)), hw, res.next_offset


async def _read_one(broker: BrokerView, part: PartitionLog, offset: int, max_bytes: int,
                    ahead: ReadAhead | None = None) -> dict[str, Any]:
    cfg = broker.config.kafka
    assert cfg is not None
    out: dict[str, Any] = {"partition_index": part.index, "error_code": NONE,
                           "high_watermark": part.durable_offset,
                           "last_stable_offset": part.durable_offset,
                           "log_start_offset": part.start_offset,
                           "preferred_read_replica": -1, "records": b""}
    if not part.start_offset <= offset <= part.durable_offset:
        out["error_code"] = OFFSET_OUT_OF_RANGE
        return out
    early = ahead.take(part, offset, max_bytes) if ahead is not None else None
    try:
        if early is not None:
            data, hw, after = await early
        elif part.durable_offset - offset <= INLINE_READ_RECORDS:
            data, hw, after = _read(part, offset, max_bytes, cfg.compression)
        else:
            data, hw, after = await asyncio.to_thread(_read, part, offset, max_bytes,
                                                      cfg.compression)
    except OffsetOutOfRange:
        out["error_code"] = OFFSET_OUT_OF_RANGE
        return out
    except (LogError, OSError):
        out["error_code"] = KAFKA_STORAGE_ERROR
        return out
    out["records"] = data
    out["high_watermark"] = out["last_stable_offset"] = hw
    if ahead is not None and part.durable_offset - after > INLINE_READ_RECORDS:
        ahead.start(part, after, max_bytes,
                    lambda: _read(part, after, max_bytes, cfg.compression))
    return out


async def fetch(broker: BrokerView, who: Principal, req: Any,
                ahead: ReadAhead | None = None) -> dict[str, Any]:
    """Read every requested partition; when all are empty, wait for data (long-poll).
    ``ahead`` (the connection's) serves and starts reads ahead for a Fetch of one
    partition (see ``readahead``); a Fetch of several drops it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(millis(req.max_wait), MAX_WAIT_MS) / 1000
    wanted = []
    for t in req.topics:
        for p in t.partitions:
            part, err = _partition(broker, who, t.topic, p.partition)
            wanted.append((t.topic, p, part, err))
    if ahead is not None and (len(wanted) != 1 or wanted[0][2] is None):
        ahead.drop()
        ahead = None
    while True:
        answers: dict[str, list[dict[str, Any]]] = {}
        seen: list[tuple[PartitionLog, int]] = []  # (partition, durable end when read)
        total = 0
        budget = max(1, min(req.max_bytes, MAX_FETCH_BYTES))
        for topic, p, part, err in wanted:
            if part is None:
                ans: dict[str, Any] = {"partition_index": p.partition, "error_code": err,
                                       "records": b""}
            else:
                ans = await _read_one(broker, part, p.fetch_offset,
                                      min(p.partition_max_bytes, budget), ahead)
                seen.append((part, ans["high_watermark"]))
                total += len(ans["records"])
                budget = max(1, budget - len(ans["records"]))
            answers.setdefault(topic, []).append(ans)
        remaining = deadline - loop.time()
        if total >= max(1, req.min_bytes) or remaining <= 0 or any(
                a["error_code"] for parts in answers.values() for a in parts):
            return {"responses": [{"topic": t, "partitions": ps}
                                  for t, ps in answers.items()]}
        # Wait for data past what was just read, not past the fetch offset: a partition
        # holding less than min_bytes would otherwise wake us at once, and the loop would
        # spin on the event loop until max_wait re-reading the same records.
        await _wait_any(seen, remaining)


async def _wait_any(parts: list[tuple[PartitionLog, int]], timeout: float) -> None:
    """Until one partition's durable end passes the offset given for it, or ``timeout``."""
    events = [(p, p.waiter()) for p, _ in parts]
    if any(p.durable_offset > offset for p, offset in parts):
        for p, ev in events:
            p.forget(ev)
        return  # data arrived between the read and the registration
    if not parts:
        await asyncio.sleep(timeout)
        return
    waits = [asyncio.ensure_future(ev.wait()) for _, ev in events]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        for p, ev in events:
            if not ev.is_set():
                p.forget(ev)


def produce(req: Any) -> dict[str, Any]:
    """Produce is refused: readings enter through the edge uplink (exactly once, G3)."""
    return {"responses": [{"name": t.name, "partition_responses": [
        {"index": p.index, "error_code": POLICY_VIOLATION, "base_offset": -1}
        for p in t.partition_data]} for t in req.topic_data]}


__all__ = ["fetch", "list_offsets", "metadata", "produce"]
