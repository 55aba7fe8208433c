"""When a partial batch may be sent: the trickle and linger rule of the forwarder.

Kept apart from ``edge_agent.forwarder`` (which schedules slots, sends, retries and
persists) because it is one self-contained policy: given a stream's unsent records and
its last request time, when may the next request leave, and whether a durable append
needs to wake the forwarder at all. ``Forwarder`` inherits it, so ``_due`` and ``_held``
stay methods of the forwarder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from uplink import SenderState

from .config import UplinkConfig


class TrickleStream(Protocol):
    """What the rule reads of a stream (``stream_sender.StreamSender``, not imported: the
    forwarder imports this module)."""

    state: SenderState
    stopped: str | None
    pending_since: float | None
    last_sent_at: float

    @property
    def priority(self) -> int: ...

    def unsent(self) -> int: ...


class TrickleRule:
    """The forwarder's batching-by-time rule (a mixin of ``Forwarder``)."""

    cfg: UplinkConfig
    senders: Sequence[TrickleStream]
    in_flight: int
    #: time.monotonic() when the run loop's timer fires (inf: no timer)
    _timer_at: float

    def _due(self, s: TrickleStream, pending: int, now: float) -> float:
        """When ``pending`` unsent records of ``s`` may go (``now`` or earlier: at once).

        A trickle is batched by time: while the stream's records are fewer than
        ``min_batch_records``, or arrive slower than ``trickle_rate`` a second (counted
        since its previous request), it sends at most one request per
        ``min_batch_linger_ms``; after a quiet spell the first goes at once. A request
        costs the agent (and the broker) about as much CPU as a dozen readings, so a quiet
        gateway pays for one a second, not one per group commit. Under load each group
        commit makes dozens of records durable at once, so this never holds a busy stream
        back; priority 0 streams (alarms) are exempt.
        """
        cfg = self.cfg
        if pending >= cfg.max_batch_records:
            return now
        due = now
        if s.state.in_flight and s.pending_since is not None:
            due = s.pending_since + cfg.linger_ms / 1000
        spacing = cfg.min_batch_linger_ms / 1000
        since = now - s.last_sent_at
        if (s.priority > 0 and since < spacing
                and (pending < cfg.min_batch_records or pending < cfg.trickle_rate * since)):
            due = max(due, s.last_sent_at + spacing)
        return due

    def _held(self, now: float) -> bool:
        """Whether no stream can send before the forwarder's timer fires anyway (only
        trickle spacing or the linger holds them): a durable append then needs no
        wake-up of the forwarder's task."""
        for s in self.senders:
            if s.stopped is not None:
                continue
            pending = s.unsent()
            if pending == 0:
                continue
            if s.pending_since is None or (self.in_flight < self.cfg.max_in_flight
                                           and self._due(s, pending, now) < self._timer_at):
                return False
        return True
