"""Bodies older than the tail cache: batched direct gets and a bounded sequential read-ahead.

Strategy: a read names the messages it needs (the view's plan). They are asked for with
one batched direct get (``{"seq", "batch", "max_bytes"}`` on ``$JS.API.DIRECT.GET.<stream>``,
nats-server >= 2.11): any replica streams the messages to a private inbox and ends with
an empty "204 EOB" status message. A message the answer lacks (a replica behind the
leader, direct gets off, a server that answers a batch with one message, a timeout) is
read by the single-message path (``fallback``: a direct get, then the leader's get), so a
lagging replica slows a read down but never shortens it.

A reader that reads on where its last read ended (a consumer catching up) finds the next
messages already fetched: each read asks for what follows before it waits for its own
bodies, until ``window`` bytes past it are in flight or held, in chunks the size of that
read (the next read waits for one chunk at most, not for the window), ``MAX_CHUNKS``
chunks at most. A first read, or a read somewhere else, asks for one chunk ahead. Bodies
the tail cache holds are never fetched ahead.

Memory is bounded twice: a partition holds at most ``window`` bytes of read-ahead past
the read in progress (plus one message when a single message is larger, and the last
message read, where the next read starts when the last one ended inside it), and every
partition of a node takes its bytes from one ``Budget``, so a node holds at most
``Budget.total`` whatever the number of partitions being read; past it, reads are served
on demand. A chunk is given back once the reader passed it, and a partition's read-ahead
(with the last message read) is dropped when the reader goes elsewhere, is idle for
``IDLE_S``, or the partition closes.

Concurrency: everything here runs on the store's client loop; reads of the view's lists
go through ``view.following`` (under the view's lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client

from ._client import NATS_ERRORS
from ._view import PartitionView

log = logging.getLogger(__name__)
#: seconds a partition's read-ahead is kept without a read
IDLE_S = 5.0
#: read-ahead bytes per partition, and per node (all partitions)
WINDOW_BYTES = 8 << 20
TOTAL_BYTES = 64 << 20
#: requests in flight for one partition's read-ahead at most (reads of a few small
#: messages would otherwise fill the window with thousands of tiny requests)
MAX_CHUNKS = 16
NUM_PENDING = "Nats-Num-Pending"  # on every message of a batched answer (not on an old server's)


class Budget:
    """The read-ahead bytes a node may hold (client loop only, so no lock)."""

    def __init__(self, total: int = TOTAL_BYTES) -> None:
        self.total = total
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


async def batch_get(nc: Client, stream: str, seqs: Sequence[int], nbytes: int,
                    timeout: float) -> dict[int, bytes]:
    """The bodies of ``seqs`` (ascending) that one batched direct get returns: maybe fewer
    (see the module docstring), never an error."""
    if not seqs:
        return {}
    want, last = set(seqs), seqs[-1]
    got: dict[int, bytes] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: object) -> None:
        headers = getattr(msg, "headers", None) or {}
        if "Status" in headers:  # 204 EOB, or 404/503/408: nothing more comes
            seq = last
        else:
            seq = int(headers.get("Nats-Sequence", "0") or 0)
            if seq in want:
                got[seq] = getattr(msg, "data", b"") or b""
            if NUM_PENDING not in headers:  # a server without batches answers once
                seq = last
        if seq >= last and not done.done():
            done.set_result(None)

    req = json.dumps({"seq": seqs[0], "batch": last - seqs[0] + 1,
                      "max_bytes": max(nbytes, 1)}).encode()
    try:
        sub = await nc.subscribe(nc.new_inbox(), cb=on_msg)
    except NATS_ERRORS as exc:
        log.debug("batch get of %s: %s", stream, exc)
        return got
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", req, reply=sub.subject)
        async with asyncio.timeout(timeout):
            await done
    except NATS_ERRORS as exc:
        log.debug("batch get of %s #%d..%d: %s", stream, seqs[0], last, exc)
    finally:
        try:
            await sub.unsubscribe()
        except NATS_ERRORS as exc:
            log.debug("batch get of %s: unsubscribe: %s", stream, exc)
    return got


@dataclass(eq=False)
class _Chunk:
    seqs: list[int]
    nbytes: int
    task: asyncio.Task[dict[int, bytes]] = field(repr=False)


Fetch = Callable[[Sequence[int], int], Awaitable[dict[int, bytes]]]
Fallback = Callable[[int], Awaitable[bytes | None]]


class ReadAhead:
    """The cold reads of one partition (see the module docstring)."""

    def __init__(self, view: PartitionView, fetch: Fetch, fallback: Fallback, budget: Budget,
                 window: int = WINDOW_BYTES) -> None:
        self.view, self.fetch, self.fallback = view, fetch, fallback
        self.budget, self.window = budget, window
        self._chunks: deque[_Chunk] = deque()
        self._last_read = -1  # the highest sequence the last read asked for
        self._last_body: bytes | None = None  # its body: a read that ended inside a
        # message starts the next one there
        self._idle: asyncio.TimerHandle | None = None
        self.ahead_hits = 0  # bodies a read found fetched ahead
        self.on_demand = 0  # bodies a read had to wait a request for

    @property
    def held(self) -> int:
        """Bytes of read-ahead in flight or held."""
        return sum(c.nbytes for c in self._chunks)

    async def load(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """The bodies of ``seqs`` (ascending) that the stream still holds."""
        if not seqs:
            return {}
        if self._idle is not None:
            self._idle.cancel()
        ahead = self._chunks[-1].seqs[-1] if self._chunks else self._last_read
        sequential = self._last_read >= 0 and (
            self._last_read <= seqs[0] <= ahead
            or self.view.following(self._last_read, 0)[0][:1] == [seqs[0]])
        if not sequential:
            self.drop()
        while self._chunks and self._chunks[0].seqs[-1] < seqs[0]:
            self._release(self._chunks.popleft())
        out: dict[int, bytes] = {}
        if seqs[0] == self._last_read and self._last_body is not None:
            out[seqs[0]] = self._last_body
        mine = [c for c in self._chunks if c.seqs[0] <= seqs[-1]]
        covered = {q for c in mine for q in c.seqs}
        uncovered = [q for q in seqs if q not in out and q not in covered]
        now = (asyncio.ensure_future(self.fetch(uncovered, self.view.bytes_of(uncovered)))
               if uncovered else None)
        # what follows is asked for before this read waits, so it travels meanwhile
        step = self.view.bytes_of(seqs)
        self._top_up(seqs[-1], self.window if sequential else step,
                     max(step, self.window // MAX_CHUNKS))
        for chunk in mine:
            try:
                bodies = await asyncio.shield(chunk.task)
            except asyncio.CancelledError:
                if not chunk.task.cancelled():
                    if now is not None:
                        now.cancel()
                    raise  # this read was cancelled, not the chunk
                continue  # another read dropped it: what it held is read below
            out.update((q, bodies[q]) for q in seqs if q in bodies)
        if now is not None:
            out.update(await now)
        self.ahead_hits += sum(q in covered for q in seqs)
        self.on_demand += len(uncovered)
        rest = [q for q in seqs if q not in out]
        found = await asyncio.gather(*(self.fallback(q) for q in rest))
        out.update((q, b) for q, b in zip(rest, found, strict=True) if b is not None)
        self._last_read = max(self._last_read, seqs[-1]) if sequential else seqs[-1]
        self._last_body = out.get(self._last_read)
        while self._chunks and self._chunks[0].seqs[-1] <= seqs[-1]:
            self._release(self._chunks.popleft())
        self._arm_idle()
        return out

    def _top_up(self, after: int, limit: int, step: int) -> None:
        """Fetch what follows sequence ``after`` and the chunks already asked for, in
        chunks of ``step`` bytes (the size of a read: the next read waits for one chunk,
        not the window), until ``limit`` bytes beyond ``after`` are in flight or held."""
        if self.window <= 0:
            return
        held = sum(c.nbytes for c in self._chunks if c.seqs[-1] > after)  # kept after the read
        frontier = max(self._chunks[-1].seqs[-1], after) if self._chunks else after
        while held < limit:
            seqs, nbytes = self.view.following(frontier, min(step, limit - held))
            if not seqs or not self.budget.take(nbytes):
                return
            task = asyncio.ensure_future(self.fetch(seqs, nbytes))
            self._chunks.append(_Chunk(seqs, nbytes, task))
            held += nbytes
            frontier = seqs[-1]

    def _release(self, chunk: _Chunk) -> None:
        chunk.task.cancel()
        self.budget.give(chunk.nbytes)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = (asyncio.get_running_loop().call_later(IDLE_S, self.drop)
                      if self._chunks or self._last_body is not None else None)

    def drop(self) -> None:
        """Forget the read-ahead (the reader went elsewhere, went idle, or the partition
        closed); its bytes go back to the budget."""
        while self._chunks:
            self._release(self._chunks.popleft())
        self._last_body = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
