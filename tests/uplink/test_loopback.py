"""Edge sender and cloud store linked in memory, through the real bytes.

Like h11's ConnectionPair: both sides use only the uplink package (encode,
decode, decide, SenderState), the "network" is two lists the test reorders,
duplicates and drops, and the assertion is G3: every record of the edge log
lands in the cloud exactly once, in order.  The cloud may also restart from a
stale state checkpoint (it forgets acks it sent; its per-partition marks keep
the records from being stored twice) and refuse batches over its record limit
(HTTP 413): every sender rule of ``SenderState`` is exercised here.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from uplink import (
    Ack,
    Batch,
    MalformedBatch,
    SenderState,
    UplinkRecord,
    decide,
    decode_ack,
    decode_batch,
    decode_refusal,
    encode_ack,
    encode_batch,
    encode_refusal,
    reply_for,
)

Position = tuple[str, str, str]
Ticket = tuple[int, int]  # (records in the batch, the sender's acked offset when built)
Request = tuple[bytes, str, Ticket]
Reply = tuple[int, bytes, Ticket]


@dataclass
class Cloud:
    """The broker's ingest in memory: the durable offset per position and the records."""

    acked: dict[Position, int] = field(default_factory=dict)
    stored: dict[Position, list[UplinkRecord]] = field(default_factory=lambda: defaultdict(list))
    max_records: int | None = None  # more records in one batch: 413

    def handle(self, body: bytes, content_encoding: str) -> tuple[int, bytes]:
        try:
            batch = decode_batch(body, content_encoding)
        except MalformedBatch as exc:
            return 400, json.dumps(exc.to_dict()).encode()
        if self.max_records is not None and len(batch.records) > self.max_records:
            return 413, b"too many records"
        position = (batch.edge_id, batch.stream, batch.generation)
        decision = decide(self.acked.get(position), batch)
        # "durable" first, then the offset, then the reply (G1); the mark (the highest
        # offset stored) filters what a stale checkpoint made the cloud accept again
        stored = self.stored[position]
        mark = stored[-1].offset if stored else -1
        stored.extend(r for r in decision.records_to_write if r.offset > mark)
        self.acked[position] = decision.new_acked_offset
        reply = reply_for(batch, decision)
        if isinstance(reply, Ack):
            return 200, encode_ack(reply)
        return 409, encode_refusal(reply)

    def restart_from_stale_checkpoint(self, position: Position, acked: int) -> None:
        """The cloud comes back knowing an older acked offset than it sent."""
        self.acked[position] = min(self.acked.get(position, -1), acked)


@dataclass
class EdgeLog:
    """An edge log: offsets from ``start``; some offsets lost to corruption (holes)."""

    start: int = 0
    end: int = 0  # the next offset to assign
    records: list[UplinkRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.end = max(self.end, self.start)

    def append(self, count: int, holes: frozenset[int] = frozenset()) -> None:
        for offset in range(self.end, self.end + count):
            if offset - self.end not in holes:
                self.records.append(
                    UplinkRecord(offset, b"dev-%d" % (offset % 7), 10_000 + offset, b"%d" % offset)
                )
        self.end += count

    def read(self, base: int, last: int) -> tuple[UplinkRecord, ...]:
        offsets = [r.offset for r in self.records]
        return tuple(
            self.records[bisect.bisect_left(offsets, base) : bisect.bisect_right(offsets, last)]
        )


@dataclass
class Edge:
    """The forwarder's logic without I/O: claim a range, encode it, react to replies."""

    log: EdgeLog
    position: Position = ("edge-1", "telemetry", "gen-a")
    max_records: int = 7
    window: int = 20
    state: SenderState = field(init=False)

    def __post_init__(self) -> None:
        self.restart(self.log.start - 1)

    def restart(self, acked_offset: int) -> None:
        self.state = SenderState(*self.position, acked_offset, max_in_flight=self.window,
                                 batch_records=self.max_records)

    def poll(self, compression: str = "none") -> Request | None:
        """The next request, with its ticket: (records, our acked offset when built)."""
        acked = self.state.acked_offset
        claimed = self.state.next_range(self.log.end)
        if claimed is None:
            return None
        base, last = claimed
        batch = Batch(*self.position, base, last, self.log.read(base, last))
        body, encoding = encode_batch(batch, compression)  # type: ignore[arg-type]
        return body, encoding, (len(batch.records), acked)

    def on_reply(self, status: int, body: bytes, ticket: Ticket) -> None:
        records, acked_when_sent = ticket
        if status == 200:
            self.state.on_ack(decode_ack(body))
        elif status == 409:
            self.state.on_refusal(decode_refusal(body), acked_when_sent, self.log.start)
        elif status == 413 and self.state.on_too_large(records):
            pass
        else:
            raise AssertionError(f"unexpected {status}: {body!r}")

    @property
    def done(self) -> bool:
        return self.state.acked_offset == self.log.end - 1


@dataclass
class Link:
    """The network: requests and replies in flight, in a list the test can shuffle."""

    edge: Edge
    cloud: Cloud
    requests: list[Request] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def send_all(self, compression: str = "none") -> None:
        while (request := self.edge.poll(compression)) is not None:
            self.requests.append(request)

    def deliver_request(self, index: int = 0, keep_copy: bool = False) -> None:
        body, encoding, ticket = self.requests[index] if keep_copy else self.requests.pop(index)
        self.replies.append((*self.cloud.handle(body, encoding), ticket))

    def deliver_reply(self, index: int = 0) -> None:
        self.edge.on_reply(*self.replies.pop(index))

    def drain(self, rounds: int = 1000) -> None:
        """A healthy network from here on: whatever was in flight is lost, then no faults."""
        self.requests.clear()
        self.replies.clear()
        self.edge.state.rewind()
        for _ in range(rounds):
            if self.edge.done:
                return
            self.send_all()
            while self.requests:
                self.deliver_request()
            while self.replies:
                self.deliver_reply()
        raise AssertionError("the edge never caught up")

    def stored(self) -> list[UplinkRecord]:
        return self.cloud.stored[self.edge.position]


def pair(count: int = 50, start: int = 0, holes: frozenset[int] = frozenset()) -> Link:
    log = EdgeLog(start=start)
    log.append(count, holes)
    return Link(Edge(log), Cloud())


def test_clean_link_delivers_everything_once() -> None:
    link = pair(50, holes=frozenset({3, 4, 20}))
    link.drain()
    assert link.stored() == link.edge.log.records
    assert link.cloud.acked[link.edge.position] == 49


def test_lost_acks_are_retried_without_writing_twice() -> None:
    link = pair(30)
    for _ in range(5):
        link.send_all()
        while link.requests:
            link.deliver_request()
        link.replies.clear()  # every ack lost
        link.edge.state.rewind()  # the forwarder times out
        link.edge.log.append(3)
    link.drain()
    assert link.stored() == link.edge.log.records


def test_duplicated_requests_are_acked_not_rewritten() -> None:
    link = pair(40)
    link.send_all()
    link.deliver_request(keep_copy=True)
    link.deliver_request(keep_copy=True)
    link.deliver_reply()
    link.deliver_reply()  # a duplicate ack: stale, changes nothing
    link.send_all()
    while link.requests:
        link.deliver_request(keep_copy=True)  # each twice: once now ...
        link.deliver_request()  # ... and its copy
    while link.replies:
        link.deliver_reply()
    link.drain()
    assert link.stored() == link.edge.log.records


def test_reordered_requests_are_refused_and_resent() -> None:
    link = pair(60)
    link.send_all()
    link.deliver_request()
    link.deliver_reply()  # the generation is now confirmed; the window opens
    link.send_all()
    assert len(link.requests) >= 3
    link.requests.reverse()
    while link.requests:
        link.deliver_request()
    statuses = [status for status, _, _ in link.replies]
    assert 409 in statuses
    while link.replies:
        link.deliver_reply()
    link.drain()
    assert link.stored() == link.edge.log.records


def test_edge_restarting_without_its_acked_offset_resends_nothing_new() -> None:
    link = pair(30, start=100)
    link.drain()
    link.edge.restart(link.edge.log.start - 1)  # lost its own acked offset
    link.edge.log.append(10)
    link.drain()
    assert link.stored() == link.edge.log.records


def test_a_new_generation_is_a_new_sequence_not_a_reuse_of_offsets() -> None:
    link = pair(20)
    link.drain()
    wiped = Link(Edge(EdgeLog(), position=("edge-1", "telemetry", "gen-b")), link.cloud)
    wiped.edge.log.append(15)
    wiped.drain()
    assert link.stored() == link.edge.log.records
    assert wiped.stored() == wiped.edge.log.records
    assert [r.offset for r in wiped.stored()] == list(range(15))


def test_a_malformed_request_gets_400_and_the_link_keeps_working() -> None:
    link = pair(10)
    status, body = link.cloud.handle(b"\xa1junk", "identity")
    assert status == 400
    assert json.loads(body)["field"] == "body"
    link.drain()
    assert link.stored() == link.edge.log.records


def test_a_cloud_restarted_from_a_stale_checkpoint_gets_a_rewind_not_a_duplicate() -> None:
    link = pair(60)
    link.drain()
    position = link.edge.position
    link.cloud.restart_from_stale_checkpoint(position, 20)  # forgot the acks of 21..59
    link.edge.log.append(10)
    link.send_all()
    link.deliver_request()
    status, _, _ = link.replies[0]
    assert status == 409  # 60.. is a gap for a cloud that expects 21
    link.deliver_reply()
    assert (link.edge.state.acked_offset, link.edge.state.next_offset) == (20, 21)
    link.drain()
    assert link.stored() == link.edge.log.records
    assert link.cloud.acked[position] == 69


def test_the_edge_freed_what_the_stale_cloud_forgot() -> None:
    """The rewind reaches below the edge log's start: those offsets go as an empty range."""
    link = pair(60)
    link.drain()
    link.cloud.restart_from_stale_checkpoint(link.edge.position, 9)
    log = link.edge.log
    log.start = 40  # the edge deleted its acked segments
    log.records = [r for r in log.records if r.offset >= 40]
    log.append(5)
    link.send_all()
    link.deliver_request()
    link.deliver_reply()
    assert link.edge.state.max_in_flight == link.edge.window + 30
    link.drain()
    assert [r.offset for r in link.stored()] == list(range(65))


def test_batches_over_the_cloud_limit_are_halved_until_they_fit() -> None:
    link = pair(100)
    link.edge.restart(-1)
    link.edge.state.batch_records = 20
    link.cloud.max_records = 6
    link.drain()
    assert link.edge.state.batch_records <= 6
    assert link.stored() == link.edge.log.records


ACTIONS = (
    "send",
    "deliver",
    "duplicate",
    "drop",
    "reply",
    "lose_reply",
    "timeout",
    "append",
    "restart",
    "cloud_restart",
)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), start=st.integers(0, 40), initial=st.integers(0, 30))
def test_any_fault_schedule_delivers_every_record_exactly_once(
    data: st.DataObject, start: int, initial: int
) -> None:
    log = EdgeLog(start=start)
    log.append(initial, frozenset(data.draw(st.sets(st.integers(0, 29), max_size=5))))
    cloud = Cloud(max_records=data.draw(st.none() | st.integers(1, 9)))
    link = Link(Edge(log, max_records=data.draw(st.integers(1, 9))), cloud)
    for _ in range(data.draw(st.integers(0, 60))):
        action = data.draw(st.sampled_from(ACTIONS))
        if action == "send":
            link.send_all(data.draw(st.sampled_from(("none", "gzip", "zstd"))))
        elif action in ("deliver", "duplicate", "drop") and link.requests:
            index = data.draw(st.integers(0, len(link.requests) - 1))  # any order
            if action == "drop":
                link.requests.pop(index)
            else:
                link.deliver_request(index, keep_copy=action == "duplicate")
        elif action in ("reply", "lose_reply") and link.replies:
            index = data.draw(st.integers(0, len(link.replies) - 1))
            if action == "lose_reply":
                link.replies.pop(index)
            else:
                link.deliver_reply(index)
        elif action == "timeout":
            link.edge.state.rewind()
        elif action == "append":
            link.edge.log.append(data.draw(st.integers(1, 10)))
        elif action == "restart":
            # a crash: the edge comes back with an acked offset at most as new as it knew
            known = link.edge.state.acked_offset
            link.edge.restart(data.draw(st.integers(log.start - 1, max(known, log.start - 1))))
        elif action == "cloud_restart" and link.edge.position in cloud.acked:
            # a stale state checkpoint: the cloud forgets some of the acks it sent
            acked = cloud.acked[link.edge.position]
            cloud.restart_from_stale_checkpoint(link.edge.position,
                                                data.draw(st.integers(-1, acked)))
        # G3 at every step: the cloud holds a prefix of the log, once, in order
        stored = link.stored()
        assert stored == link.edge.log.records[: len(stored)]
    link.drain()
    assert link.stored() == link.edge.log.records
