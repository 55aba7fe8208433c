"""The forwarder: ships each stream's log to the cloud in batches, by priority.

Strategy: one scheduler for all streams shares ``max_in_flight`` request slots. Whenever a
slot frees or data arrives, it hands slots to streams in priority order (0 first), so a
backlog in a low-priority stream can delay a high-priority one by at most the batches
already in flight (one batch round). Streams below the most urgent priority take at most
``max_in_flight - 1`` slots: a round can last as long as the cloud stalls (a broker node
waiting for a JetStream leader election holds every request for seconds), and an alarm
must be on the wire when the stall ends, not queued behind it. Per stream, the sans-IO
``uplink.SenderState`` decides which offsets go next and what an ack or a refusal means;
this module only reads the log (what was just appended, from memory: ``edge_agent.tail``),
calls the Uplink, and records acks (freeing segments). Retryable failures are retried
forever (exponential backoff from 50 ms up to ``retry_max_s``, full jitter; a plain loop
rather than tenacity, whose retry objects are reference cycles that only the full garbage
collection frees: ~19 objects per attempt, ~400 retry objects alive at a time at 5,000
readings/s); a fatal one stops that stream loudly while the others go on; a TLS failure is
retried at ``retry_max_s`` and reported as a problem (``SenderStats.tls_error``). The
first request that goes through after failures ends every retry's wait (``_link_back``):
each request backs off on its own, so without it an alarm batch could sit out seconds of
its backoff while telemetry, whose wait happened to be shorter, was already flowing again.
Every position rule (refusals, the rewind to a cloud that restarted from a stale state
checkpoint, halving the batch size on a 413, giving up what is in flight) is
``SenderState``'s (docs/protocol.md "Sender rules"); this module only tells it what
happened.

Wake-ups: the ingest pipeline calls ``notify`` once an append is durable (from the same
durability waiter that releases its PUBACKs), since only durable records may leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time

from .config import UplinkConfig
from .outgoing import Outgoing
from .stream_sender import StreamSender
from .trickle import TrickleRule
from .uplink_http import (
    FatalUplinkError,
    RetryableUplinkError,
    TlsUplinkError,
    Uplink,
    announce,
)

log = logging.getLogger(__name__)


def retry_wait(failures: int, exc: BaseException, retry_max_s: float) -> float:
    """Seconds before the next attempt after ``failures`` failed ones: full jitter over
    an exponential ceiling (50 ms, 100 ms, ... up to ``retry_max_s``); a TLS failure
    waits ``retry_max_s`` (no point hammering a handshake that fails)."""
    if isinstance(exc, TlsUplinkError):
        return retry_max_s
    return random.uniform(0, min(retry_max_s, 0.05 * 2 ** min(failures - 1, 30)))


class Forwarder(TrickleRule):
    """Schedules batches of all streams over one Uplink."""

    def __init__(self, senders: list[StreamSender], uplink: Uplink, cfg: UplinkConfig) -> None:
        self.senders = sorted(senders, key=lambda s: s.priority)
        self._top = self.senders[0].priority if self.senders else 0  # the most urgent
        self.uplink = uplink
        self.cfg = cfg
        self.in_flight = 0
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._persist_lock = threading.Lock()
        self.connected = True
        self._announced = False
        #: time.monotonic() when the run loop's timer fires (inf: no timer)
        self._timer_at = float("inf")
        #: set (and replaced) when a request goes through after failures: ends the
        #: retries' waits (module docstring)
        self._link_back = asyncio.Event()

    def notify(self) -> None:
        """Data became durable in some stream's log: look for batches to send.

        Called by the ingest pipelines from their durability waiter (one per append). In a
        trickle most appends only add to a batch that waits for its time: then nothing
        wakes the run loop, whose timer is set for that time already."""
        if not self._wakeup.is_set() and not self._held(time.monotonic()):
            self._wakeup.set()

    def _launch_ready(self, now: float) -> float | None:
        """Start sends for free slots in priority order; returns the next linger deadline
        (``now`` when a batch was launched and more may go at once).

        A partial batch may wait (``_due``): for up to ``linger_ms`` while a request of
        the stream is on the wire (Nagle's rule: the reply usually comes first), and, in
        a trickle, until ``min_batch_linger_ms`` after the stream's previous request.
        """
        deadline: float | None = None
        cfg = self.cfg
        # The last slot is kept for the most urgent streams: with every slot taken by
        # telemetry held in a stalled cloud, an alarm would wait for the stall to end
        # before it is even sent (module docstring).
        rest = max(1, cfg.max_in_flight - 1)
        for s in self.senders:
            limit = cfg.max_in_flight if s.priority == self._top else rest
            while self.in_flight < limit and s.stopped is None:
                pending = s.unsent()
                if pending == 0:
                    s.pending_since = None
                    break
                if s.pending_since is None:
                    s.pending_since = now
                due = self._due(s, pending, now)
                if due > now:
                    deadline = due if deadline is None else min(deadline, due)
                    break
                acked = s.state.acked_offset
                batch = s.build_batch()
                if batch is None:
                    break
                # Encoded here, not in the task: a pass that fills every free slot (a
                # catch-up) would otherwise hold all its batches' records at once, each
                # until its task first runs. One batch's records alive at a time.
                try:
                    out = Outgoing.encode(batch, cfg.compression)
                except Exception as exc:  # a bug must not kill the scheduler
                    s.state.rewind()
                    s.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("stream %s: a batch could not be encoded", s.name)
                    break
                del batch
                s.pending_since = None
                s.last_sent_at = now
                self.in_flight += 1
                task = asyncio.create_task(self._send(s, out, acked))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                if self.in_flight < limit and s.unsent():
                    # More may go: due now, so the run loop's timer brings the next pass
                    # on the next loop turn. One batch is encoded per turn, and MQTT
                    # reads and PUBACKs run between two encodes.
                    return now
            if self.in_flight >= cfg.max_in_flight:
                break
        return deadline

    async def _send(self, s: StreamSender, out: Outgoing, acked_when_sent: int) -> None:
        """Send ``out`` until the cloud answers; retries resend the same bytes (the
        records were freed when it was encoded, not kept for the request's retries: a
        catch-up's batches in flight were the agent's memory high water)."""
        try:
            failures = 0
            while True:
                try:
                    reply = await self.uplink.send(s.store.config.topic, out)
                    break
                except RetryableUplinkError as exc:
                    failures += 1
                    self._note_retry(s, exc)
                    await self._backoff(retry_wait(failures, exc, self.cfg.retry_max_s))
            if not self.connected:
                self.connected = True
                self._link_back.set()
                self._link_back = asyncio.Event()
            s.stats.tls_error = ""
            s.stats.batches_sent += 1
            s.stats.records_sent += out.count
            s.on_reply(reply, acked_when_sent)
        except FatalUplinkError as exc:
            # Too large for this cloud (max_records_per_request, max_body_bytes):
            # nothing of it was written; resend from the acked offset in halves.
            if exc.status == 413 and s.on_too_large(out.count, str(exc)):
                return
            s.stopped = str(exc)
            s.stats.last_error = str(exc)
            log.error("stream %s stopped: the cloud refused a batch: %s", s.name, exc)
        except Exception as exc:  # a bug must not kill the scheduler silently
            s.state.rewind()
            s.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("stream %s: unexpected error sending a batch", s.name)
        finally:
            self.in_flight -= 1
            self._wakeup.set()

    async def _backoff(self, delay: float) -> None:
        """Wait ``delay`` s, or until a request goes through (module docstring)."""
        back = self._link_back
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await back.wait()

    def _note_retry(self, s: StreamSender, exc: BaseException | None) -> None:
        self.connected = False
        s.stats.retries += 1
        s.stats.last_error = str(exc)
        if isinstance(exc, TlsUplinkError):
            if not s.stats.tls_error:
                log.error("stream %s: %s; retrying every %gs", s.name, exc,
                          self.cfg.retry_max_s)
            s.stats.tls_error = str(exc)
            return
        log.warning("stream %s: uplink error, retrying: %s", s.name, exc)

    async def run(self, persist_interval_s: float = 5.0) -> None:
        """Run until cancelled; acked offsets that moved are persisted at most every
        ``persist_interval_s`` and on exit. Idle (nothing unsent, nothing to persist)
        it sleeps until notified."""
        loop = asyncio.get_running_loop()
        next_persist = time.monotonic() + persist_interval_s
        timer: asyncio.TimerHandle | None = None
        fired: list[bool] = [False]  # the timer can fire early (ms resolution): re-arm

        def wake() -> None:
            fired[0] = True
            self._timer_at = float("inf")
            self._wakeup.set()

        if not self._announced:  # once: say now whether the cloud can be reached at all
            self._announced = True
            self._tasks.add(asyncio.create_task(announce(self.uplink, self.cfg)))
        try:
            while True:
                self._wakeup.clear()
                now = time.monotonic()
                deadline = self._launch_ready(now)
                persist_due = any(s.store.persist_due for s in self.senders)
                if persist_due and now >= next_persist:
                    await asyncio.to_thread(self.persist)
                    next_persist = time.monotonic() + persist_interval_s
                    continue  # the acked offsets may have moved meanwhile: look again
                wake_at = deadline if not persist_due else (
                    next_persist if deadline is None else min(deadline, next_persist))
                # One timer, moved only when the wake-up time changes: every durable
                # append notifies, and a timeout per wake-up was a timer made and dropped.
                if wake_at is None:
                    if timer is not None:
                        timer.cancel()
                        timer = None
                    self._timer_at = float("inf")
                elif timer is None or self._timer_at != wake_at or fired[0]:
                    if timer is not None:
                        timer.cancel()
                    self._timer_at, fired[0] = wake_at, False
                    timer = loop.call_later(max(0.0, wake_at - time.monotonic()), wake)
                await self._wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()
            self._timer_at = float("inf")
            for t in list(self._tasks):
                t.cancel()
            for t in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            # Cancelled sends never got their reply: give their ranges back, or a later
            # run() would wait for them forever.
            for s in self.senders:
                s.state.rewind()
            self.persist()

    def persist(self) -> None:
        # Runs in a worker thread from run(); a cancel of run() does not stop that thread,
        # and run()'s final persist must not write the same temp file at the same time.
        with self._persist_lock:
            for s in self.senders:
                try:
                    s.store.persist_acked()
                except OSError as exc:  # e.g. ENOSPC: a stale checkpoint only costs a
                    # resend the cloud deduplicates; the forwarder must keep running
                    log.warning("stream %s: cannot persist the acked offset: %s", s.name, exc)

    def drained(self) -> bool:
        """True when every stream's log is acknowledged up to its end."""
        return all(s.store.acked_offset >= s.store.log.end_offset - 1 for s in self.senders)
