"""Cold reads in batches and ahead of a sequential reader
(cloud_broker/storage/jetstream/_readahead.py): the read-ahead rules against a view and
an in-memory fetch (which requests are made, what is held, the memory bounds), then
batched direct gets and whole reads against a real 3-node cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from cloud_broker.config import TopicConfig
from cloud_broker.storage.jetstream import _readahead
from cloud_broker.storage.jetstream._readahead import MAX_CHUNKS, Budget, ReadAhead, batch_get
from cloud_broker.storage.jetstream._view import PartitionView, Piece
from tests.cluster.natsd import NatsCluster, jetstream_cluster
from tests.cluster.test_cold_reads import _read_all, _store, _write
from tests.helpers import wait_for

SIZE = 100  # bytes of every message of the in-memory stream


def _view(n: int, first_seq: int = 1) -> PartitionView:
    """A view of ``n`` messages of 10 records, no tail cache."""
    v = PartitionView(cache_bytes=0)
    for i in range(n):
        v.apply(Piece(first_seq + i, 10 * i, 10, SIZE, 0))
    return v


class Stream:
    """An in-memory stream: what the read-ahead asked for, and what it got back."""

    def __init__(self, seqs: Sequence[int], lose: frozenset[int] = frozenset()) -> None:
        self.bodies = {s: b"body-%d" % s for s in seqs}
        self.lose = lose  # sequences a batch answer lacks (a lagging replica)
        self.batches: list[list[int]] = []
        self.singles: list[int] = []

    async def fetch(self, seqs: Sequence[int], nbytes: int) -> dict[int, bytes]:
        self.batches.append(list(seqs))
        await asyncio.sleep(0)
        return {s: self.bodies[s] for s in seqs if s in self.bodies and s not in self.lose}

    async def fallback(self, seq: int) -> bytes | None:
        self.singles.append(seq)
        return self.bodies.get(seq)


def _ahead(v: PartitionView, s: Stream, budget: Budget | None = None,
           window: int = 6 * SIZE) -> ReadAhead:
    return ReadAhead(v, s.fetch, s.fallback, budget or Budget(10 * window), window)


async def _settle(ra: ReadAhead) -> None:
    for chunk in list(ra._chunks):
        await chunk.task


def test_a_sequential_reader_finds_its_next_reads_fetched() -> None:
    async def go() -> None:
        v, s = _view(40), Stream(range(1, 41))
        ra = _ahead(v, s)
        for first in range(1, 41, 2):
            want = [first, first + 1]
            assert await ra.load(want) == {q: b"body-%d" % q for q in want}
            assert ra.held <= ra.window and ra.budget.used == ra.held
            await _settle(ra)
        # only the first read waited for a request of its own; every later body had been
        # asked for ahead, in chunks the size of a read
        assert (ra.on_demand, ra.ahead_hits) == (2, 38)
        assert s.batches[0] == [1, 2] and all(len(b) == 2 for b in s.batches)
        assert sorted(q for b in s.batches for q in b) == list(range(1, 41))
        assert not s.singles
        assert ra.held == 0 and ra.budget.used == 0  # nothing follows the end
    asyncio.run(go())


def test_reads_of_one_small_message_keep_few_requests_in_flight() -> None:
    async def go() -> None:
        v, s = _view(200), Stream(range(1, 201))
        ra = _ahead(v, s, window=64 * SIZE)
        for q in range(1, 20):
            assert await ra.load([q]) == {q: b"body-%d" % q}
            assert len(ra._chunks) <= MAX_CHUNKS and ra.held <= ra.window
        assert min(len(c.seqs) for c in ra._chunks) == 64 // MAX_CHUNKS
        assert ra.on_demand == 1
    asyncio.run(go())


def test_a_read_elsewhere_gives_the_read_ahead_back() -> None:
    async def go() -> None:
        v, s = _view(40), Stream(range(1, 41))
        ra = _ahead(v, s)
        await ra.load([1, 2])
        await ra.load([3, 4])
        assert ra.held == ra.window == ra.budget.used
        assert await ra.load([30]) == {30: b"body-30"}  # a jump: starts over, one chunk
        assert ra._chunks[0].seqs == [31] and ra.held == SIZE == ra.budget.used
        assert await ra.load([5, 6]) == {5: b"body-5", 6: b"body-6"}  # and back
        ra.drop()
        assert ra.held == 0 and ra.budget.used == 0
    asyncio.run(go())


def test_partitions_share_one_budget_and_read_on_demand_past_it() -> None:
    async def go() -> None:
        budget = Budget(2 * SIZE)
        (va, sa), (vb, sb) = (_view(20), Stream(range(1, 21))), (_view(20), Stream(range(1, 21)))
        a, b = _ahead(va, sa, budget), _ahead(vb, sb, budget)
        await a.load([1, 2])
        assert a.held == budget.used == budget.total  # a reader that stopped for a while
        got: dict[int, bytes] = {}
        for first in range(1, 21, 2):
            got.update(await b.load([first, first + 1]))
            assert b.held == 0 and budget.used == budget.total
        assert got == sb.bodies and b.on_demand == 20
        a.drop()
        await b.load([1, 2])
        assert b.held == budget.used == 2 * SIZE
    asyncio.run(go())


def test_bodies_a_batch_lacks_are_read_one_by_one_and_the_vanished_left_out() -> None:
    async def go() -> None:
        v = _view(10)
        s = Stream([q for q in range(1, 11) if q != 7], lose=frozenset({3, 4}))
        ra = _ahead(v, s)
        got = {}
        for first in range(1, 11, 2):
            got.update(await ra.load([first, first + 1]))
        assert sorted(got) == [1, 2, 3, 4, 5, 6, 8, 9, 10]  # 7 is gone from the stream
        assert sorted(s.singles) == [3, 4, 7]
    asyncio.run(go())


def test_the_tail_cache_is_not_read_ahead() -> None:
    async def go() -> None:
        v = PartitionView(cache_bytes=5 * SIZE)
        for i in range(10):
            v.apply(Piece(1 + i, 10 * i, 10, SIZE, 0), b"x" * SIZE)  # 6..10 stay cached
        s = Stream(range(1, 11))
        ra = _ahead(v, s)
        await ra.load([1, 2])
        await ra.load([3, 4])
        await _settle(ra)
        assert max(q for b in s.batches for q in b) == 5
    asyncio.run(go())


def test_an_idle_read_ahead_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_readahead, "IDLE_S", 0.05)

    async def go() -> None:
        v, s = _view(40), Stream(range(1, 41))
        ra = _ahead(v, s)
        await ra.load([1, 2])
        await ra.load([3, 4])
        assert ra.held > 0
        async with asyncio.timeout(5):
            while ra.budget.used:
                await asyncio.sleep(0.01)
        assert ra.held == 0
    asyncio.run(go())


# -- a real cluster --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with jetstream_cluster(tmp_path_factory.mktemp("ahead"), size=3) as c:
        yield c


def test_a_batched_get_returns_what_is_left_of_a_purged_range(cluster: NatsCluster) -> None:
    """Sequences 1-3 purged, 6 deleted: a batch over 2..8 returns 4, 5, 7, 8 under their own
    sequences (never a later body for an earlier one); past the end, nothing."""
    async def go() -> None:
        nc = await nats.connect(servers=cluster.urls)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="GAP", subjects=["gap"], num_replicas=3,
                                             storage=StorageType.FILE, allow_direct=True))
            for i in range(1, 9):
                await js.publish("gap", b"m%d" % i)
            await js.purge_stream("GAP", seq=4)
            await js.delete_msg("GAP", 6)
            got = await batch_get(nc, "GAP", [2, 3, 4, 5, 6, 7, 8], 1 << 20, 5)
            assert got == {4: b"m4", 5: b"m5", 7: b"m7", 8: b"m8"}
            assert await batch_get(nc, "GAP", [20, 21], 1 << 20, 5) == {}
            assert await batch_get(nc, "NO_SUCH", [1], 1 << 20, 5) == {}
        finally:
            await nc.close()
    asyncio.run(go())


@pytest.mark.parametrize("window", [8 << 20, 0])
def test_cold_reads_with_and_without_read_ahead(cluster: NatsCluster, window: int) -> None:
    writer = _store(cluster, f"ahead{window}")
    try:
        (part,) = writer.ensure_topic(TopicConfig("t", 1))
        written = _write(part, batches=30)
    finally:
        writer.close()
    reader = _store(cluster, f"ahead{window}", readahead_bytes=window)
    try:
        (part,) = reader.ensure_topic(TopicConfig("t", 1))
        assert _read_all(part) == written
        ra = part.readahead
        # every message asked for once (a read that ended inside a message left its body
        # for the next); with read-ahead, only the first read waited for its own request
        assert ra.on_demand == (3 if window else 30)
        wait_for(lambda: reader.budget.used == ra.held, 5, message="the budget to settle")
    finally:
        reader.close()
    assert reader.budget.used == 0
