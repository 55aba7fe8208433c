"""One stream's side of the uplink: its log, its ``SenderState``, its counters.

Strategy: ``StreamSender`` is what the forwarder's scheduler (``forwarder.Forwarder``)
hands request slots to. It builds a stream's next batch (from the tail cache of what was
just appended, else from the log), feeds replies to the sans-IO ``uplink.SenderState``
(every position rule is there) and records acks in the stream's store (freeing
segments). No I/O to the cloud here: the forwarder sends.
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass

from uplink import Ack, Batch, Refusal, RefusalMove, SenderState

from .config import UplinkConfig
from .streams import StreamStore
from .tail import TAIL_BYTES, TailCache, read_block

log = logging.getLogger(__name__)


@dataclass
class SenderStats:
    batches_sent: int = 0
    records_sent: int = 0
    retries: int = 0
    acks: int = 0
    refusals: int = 0
    last_error: str = ""
    last_ack_at: float = 0.0  # time.time() of the last ack that moved the acked offset
    #: the TLS failure of the last attempt ("" after a success): a configuration problem
    #: that /healthz reports at once rather than a transient error
    tls_error: str = ""


class StreamSender:
    """One stream's uplink: its log, its SenderState and its counters."""

    def __init__(self, store: StreamStore, edge_id: str, cfg: UplinkConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.state = SenderState(edge_id, store.config.name, store.generation,
                                 store.acked_offset,
                                 max_in_flight=cfg.max_batch_records * cfg.max_in_flight,
                                 batch_records=cfg.max_batch_records)
        self.stats = SenderStats()
        self.stopped: str | None = None  # set by a fatal error
        self.pending_since: float | None = None
        #: time.monotonic() when this stream's last request left (the trickle spacing)
        self.last_sent_at = float("-inf")
        #: records the full policy deleted that the cloud never got (drops.drop_oldest)
        self.lost = 0
        #: [lo, hi) ranges deleted while a batch carrying them was on the wire: lost only
        #: if that batch is not acked (they are then resent as an empty range)
        self._dropped_in_flight: list[tuple[int, int]] = []
        store.log.on_drop = self._on_drop
        #: the last appended batches (``TAIL_BYTES``): sent from memory while the sender
        #: keeps up; still only durable offsets, the log stays the source of truth (.tail)
        self.tail = TailCache(min(TAIL_BYTES, cfg.max_batch_bytes * cfg.max_in_flight))
        store.log.on_append = self.tail.add

    @property
    def dropped_in_flight(self) -> int:
        return sum(hi - lo for lo, hi in self._dropped_in_flight)

    def _on_drop(self, base: int, nxt: int) -> None:
        """The full policy deleted offsets base..nxt-1 (from inside ``Log.append``).

        Acked ones are no loss; those not yet sent are lost now; those in a batch on the
        wire are decided by that batch's fate (``_settle`` on its ack, ``_given_up`` when
        the range has to go without its data)."""
        lo = max(base, self.state.acked_offset + 1)
        if lo >= nxt:
            return
        sent = min(max(self.state.next_offset, lo), nxt)
        self.lost += nxt - sent
        if lo < sent:
            self._dropped_in_flight.append((lo, sent))

    def _settle(self, acked: int) -> None:
        """The cloud acked up to ``acked``: deleted records it acked were delivered."""
        if self._dropped_in_flight:
            self._dropped_in_flight = [(max(lo, acked + 1), hi)
                                       for lo, hi in self._dropped_in_flight if hi > acked + 1]

    def _given_up(self, lo: int, hi: int) -> None:
        """Offsets lo..hi-1 go as an empty range: deleted ones still pending are lost."""
        keep = []
        for a, b in self._dropped_in_flight:
            x, y = max(a, lo), min(b, hi)
            if x >= y:
                keep.append((a, b))
                continue
            self.lost += y - x
            if a < x:
                keep.append((a, x))
            if y < b:
                keep.append((y, b))
        self._dropped_in_flight = keep

    @property
    def batch_records(self) -> int:
        """Records per batch; halved when the cloud says a batch is too large (413), so an
        edge configured above the broker's max_records_per_request keeps flowing."""
        return self.state.batch_records

    @property
    def name(self) -> str:
        return self.store.config.name

    @property
    def priority(self) -> int:
        return self.store.config.priority

    def unsent(self) -> int:
        """Records that may go now: durable here and not yet sent."""
        return max(0, self.store.log.durable_offset - self.state.next_offset)

    def build_batch(self) -> Batch | None:
        """Claim the next range and read its records, or None when nothing may go now."""
        log_ = self.store.log
        st = self.state
        if not st.may_claim():
            return None  # next_range would refuse: do not read (and decode) records for nothing
        base = st.next_offset
        start = max(base, log_.start_offset)  # below start: dropped by the full policy
        # Only what is durable here may leave: after a power loss the log comes back
        # without its unsynced tail and would give those offsets to new readings, which
        # the cloud, holding the old ones, would then drop as duplicates (G3).
        durable = log_.durable_offset
        if start >= durable:
            return None
        read = read_block(log_, self.tail, start, durable, st.batch_records,
                          self.cfg.max_batch_bytes)
        if read is None:
            return None
        block, nxt = read
        rng = st.next_range(min(nxt, durable), st.batch_records + start - base)
        if rng is None:
            return None
        first, last = rng
        if start > first and self._dropped_in_flight:
            self._given_up(first, min(start, last + 1))
        if len(block) and block.offsets[-1] > last:  # the window cut the fetch short
            block = block[:bisect.bisect_right(block.offsets, last)]
        # Our own checksummed log, in offset order: trusted, no per-record checks.
        return Batch.trusted(self.state.edge_id, self.name, self.store.generation, first, last,
                             block)

    def on_reply(self, reply: Ack | Refusal, acked_when_sent: int | None = None) -> None:
        """Apply the cloud's reply to a batch built while our acked offset was
        ``acked_when_sent`` (None: unknown)."""
        if isinstance(reply, Ack):
            self.stats.acks += 1
            before = self.state.acked_offset
            self.state.on_ack(reply)
            self._settle(self.state.acked_offset)
            self.tail.forget_below(self.state.acked_offset + 1)
            acked = min(self.state.acked_offset, self.store.log.end_offset - 1)
            if acked > before:
                self.stats.last_ack_at = time.time()
            self.store.note_acked(acked)
        else:
            self.stats.refusals += 1
            before = self.state.acked_offset
            move = self.state.on_refusal(reply, acked_when_sent, self.store.log.start_offset)
            if move is RefusalMove.REWIND:
                log.warning("stream %s: the cloud expects offset %d, below our acked offset "
                            "%d; rewinding", self.name, reply.expected_offset, before)

    def on_too_large(self, records: int, error: str) -> bool:
        """The cloud refused a batch of ``records`` as too large (413); False: stop."""
        if not self.state.on_too_large(records):
            return False
        self.stats.last_error = error
        log.warning("stream %s: the cloud refused a batch of %d records as too large; "
                    "sending at most %d per batch", self.name, records, self.batch_records)
        return True


__all__ = ["SenderStats", "StreamSender"]
