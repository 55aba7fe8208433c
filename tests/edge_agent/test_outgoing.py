"""A batch in flight is its encoded body: encoded once, resent as the same bytes, the
records let go of before the request (edge_agent/outgoing.py)."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from edge_agent.outgoing import Outgoing
from edge_agent.uplink_http import RetryableUplinkError
from tests.edge_agent.backlog import Backlog
from uplink import Ack, Batch, RecordBlock, Refusal, UplinkRecord


def test_an_outgoing_batch_decodes_to_the_batch_it_was_encoded_from() -> None:
    records = tuple(UplinkRecord(o, b"dev-%d" % (o % 3), 1_700_000_000_000 + o, b"v%d" % o,
                                 (("h", b"x"),) if o % 2 else ())
                    for o in (10, 11, 13, 17))  # holes in the range: an offset column
    batch = Batch("edge-1", "telemetry", "g1", 10, 18, records)
    for compression in ("none", "gzip", "zstd"):
        out = Outgoing.encode(batch, compression)
        assert (out.edge_id, out.stream, out.generation, out.base_offset, out.last_offset,
                out.count) == ("edge-1", "telemetry", "g1", 10, 18, 4)
        assert out.encoding == {"none": "identity"}.get(compression, compression)
        again = out.decode()
        assert (again.base_offset, again.last_offset) == (10, 18)
        assert list(again.records) == list(records) == list(out.decode().records)


class FailsTwice:
    """Refuses the first two attempts of every batch retryably; keeps what it was given."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seen: dict[int, list[object]] = {}

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        tries = self.seen.setdefault(batch.base_offset, [])
        tries.append(batch)
        if len(tries) <= 2:
            raise RetryableUplinkError("connection refused")
        return await self.inner.send(topic, batch)  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.inner.aclose()  # type: ignore[attr-defined]


def test_retries_resend_the_same_encoded_body_and_deliver_exactly_once(
        tmp_path: Path) -> None:
    edge = Backlog(tmp_path, {"telemetry": 500}, max_batch_records=100, max_in_flight=2)
    up = FailsTwice(edge.uplink())
    asyncio.run(edge.forward(up))
    edge.verify_and_close()
    assert len(up.seen) >= 5
    for tries in up.seen.values():
        assert len(tries) == 3
        assert all(type(t) is Outgoing for t in tries)  # never the records
        assert all(t is tries[0] for t in tries)  # one encoding, sent three times
    assert edge.senders[0].stats.records_sent == 500


class Tracked(RecordBlock):
    """A RecordBlock a test can hold a weak reference to (the real one has slots only)."""


def test_a_catch_up_holds_one_batch_of_records_at_a_time_not_one_per_free_slot(
        tmp_path: Path) -> None:
    """A scheduling pass fills every free slot during a catch-up: each batch is encoded
    before the next is read, so the records of at most one are alive at once (they set
    the agent's memory high water when each waited for its task to start)."""
    edge = Backlog(tmp_path, {"telemetry": 2000}, max_batch_records=100, max_in_flight=4)
    sender = edge.senders[0]
    built: list[weakref.ref[Tracked]] = []
    most_alive = 0
    build = sender.build_batch

    def tracked_build() -> Batch | None:
        nonlocal most_alive
        batch = build()
        if batch is None:
            return None
        block = RecordBlock.from_records(batch.records)
        mine = Tracked(block.offsets, block.keys, block.timestamps, block.values,
                       block.header_counts, block.header_names, block.header_index,
                       block.header_values)
        built.append(weakref.ref(mine))
        most_alive = max(most_alive, sum(r() is not None for r in built))
        return Batch.trusted(batch.edge_id, batch.stream, batch.generation,
                             batch.base_offset, batch.last_offset, mine)

    sender.build_batch = tracked_build  # type: ignore[method-assign]
    asyncio.run(edge.forward(edge.uplink()))
    edge.verify_and_close()
    assert len(built) >= 20
    assert most_alive == 1, f"{most_alive} batches' records alive at once"
