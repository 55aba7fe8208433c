"""One stream's ingest pipeline: batch, inspect, deduplicate, append, then acknowledge.

Strategy: the MQTT adapter hands every message to the stream's ``inbox.Inbox`` (a list
append, on the event loop thread). The ``run`` task takes whatever has gathered (up to
``max_batch``) and turns it into *one* shared_log batch: each message is inspected
(``payload.PayloadRules``), redeliveries are dropped by the per-device sequence marks
(``dedup``: a device whose sequence restarts, by a new boot epoch or by falling back more
than the redelivery window, is accepted and counted as a reset), bad input becomes
dead-letter entries. The batch is appended, and *one* durability waiter is made per
append (``_appended``). It serves both sides of G1: when the group commit covers the
append, its callback (``_durable_done``) calls ``on_durable`` (the forwarder's
``notify``: only durable records may leave) and pumps the ``acks.AckQueue``, which sends
the PUBACKs through ``ack`` in arrival order once a batch and its dead-letter entries are
durable (no task wakes up for it). While one batch waits for its fsync the next one is already
being built and appended, so the fsync rate adapts to the load and many readings share
one fsync. Nor is a batch appended before the log's group commit could start its next
fsync (``Log.commit_due_at``): until then the readings gather in the inbox, so under a
steady load one append serves a whole commit. When the inbox is ``urgent`` (the MQTT
listener saw every publisher waiting for a PUBACK) the pipeline appends at once and asks
its log to commit without waiting out the spacing (``Log.hurry_commit``).

Back-pressure: when the log refuses the batch (``LogFull`` with reject_new, ``DiskFull`` on
ENOSPC, or any write error) the pipeline keeps the QoS 1 messages unacknowledged and
retries every ``retry_s``, appending the largest prefix that fits; Mosquitto holds the
rest of the session's messages once ``receive_maximum`` are unacknowledged. QoS 0 readings
are best effort and are dropped (counted as ``full``) while the stream is blocked. As the
forwarder frees acknowledged segments, space returns and ingest resumes by itself.

No single message can stop a stream (G7): anything unexpected raised while one message
is handled dead-letters that message with reason ``internal`` (counted, logged at most
every 10 s, see ``prepare``) and the batch goes on; a record the log cannot encode
(``InvalidRecord``) is isolated by halving the batch and dead-lettered alone; any other
append failure holds the batch and retries (back-pressure, below), never ends the task.
A failing PUBACK ends ``run`` (the pipeline is restarted and its session reconnected).
Not thread-safe: everything here runs on the agent's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from functools import partial

from shared_log import InvalidRecord, LogFull

from .acks import AckQueue
from .deadletter import DeadLetter, DeadLetterLog
from .dedup import HighWaterMarks
from .inbox import Inbox, IngestStats, InMessage, Pending
from .payload import PayloadRules
from .prepare import Preparer
from .streams import StreamStore

__all__ = ["AckFn", "InMessage", "IngestStats", "RouteFn", "StreamIngest"]

log = logging.getLogger(__name__)

#: sends PUBACKs for (mid, epoch) pairs; the adapter skips other connections' mids
AckFn = Callable[[list[tuple[int, int]]], None]
#: the owning stream of a topic (first matching stream in config order), None when none
RouteFn = Callable[[str], "str | None"]


def _no_acks(acks: list[tuple[int, int]]) -> None:
    """The ``ack`` of a pipeline with no MQTT session (tests, tools)."""


class AppendRate:
    """A stream's rate for the trickle rule: readings per second of its last append and
    over its last ``appends`` appends, whichever is higher.

    Why both: the last append's own rate (its readings over the time since the one
    before) alone misjudged a busy stream. At 5,000 readings/s an append of one reading
    2 ms after the last one (an early wake-up) read as 500/s or less, below the trickle
    rate, and held the next append, with ~1,250 readings and their PUBACKs, for the whole
    trickle spacing (250 ms): every few seconds, the device -> agent p99 went from 17 to
    200-250 ms. Over four appends such a one moves the rate by a few percent. The
    windowed rate alone would be slow the other way: after a quiet spell it would count
    the appends from before it for four appends (four spacings), where the last append's
    own rate shows a burst at once. A stream that really slows down is below on both
    within four appends."""

    __slots__ = ("_recent",)

    def __init__(self, appends: int = 4) -> None:
        #: (time.monotonic(), readings) of the last appends, and the one before them
        self._recent: deque[tuple[float, int]] = deque(maxlen=appends + 1)

    def add(self, now: float, readings: int) -> float:
        """Count an append made at ``now``; its rate (inf while there is only one: no
        time span yet)."""
        recent = self._recent
        recent.append((now, readings))
        if len(recent) < 2:
            return float("inf")
        last = readings / max(now - recent[-2][0], 1e-6)
        total = sum(n for _, n in recent) - recent[0][1]
        return max(last, total / max(now - recent[0][0], 1e-6))


class StreamIngest(Preparer):
    """The pipeline of one stream (``store``), or of unmatched topics (``store is None``)."""

    def __init__(self, name: str, store: StreamStore | None, rules: PayloadRules | None,
                 marks: HighWaterMarks | None, deadletters: DeadLetterLog, route: RouteFn,
                 *, inbox: Inbox | None = None, ack: AckFn = _no_acks,
                 on_durable: Callable[[], None] = lambda: None,
                 observe_fsync: Callable[[float], None] = lambda s: None,
                 on_appended: Callable[[], None] = lambda: None,
                 max_batch: int = 2000, window_s: float = 0.0, retry_s: float = 0.5,
                 gather_s: float = 0.0, quiet_s: float = 0.0, trickle_s: float = 0.0,
                 trickle_rate: float = 0.0, routed: bool = False) -> None:
        """``inbox`` is where the MQTT session delivers (a new one if None); ``ack`` sends
        the PUBACKs of that session; ``on_durable`` is called once per append when its
        records are durable (the forwarder's ``notify``); ``observe_fsync`` gets the
        seconds from gathering to durable (PUBACK batches and one in 16 others);
        ``on_appended`` is called once per append before it is durable (an observer).
        Readings gather until the log's next commit could start (one append and fsync);
        after ``quiet_s`` without an append that is now, so the first reading waits
        ``gather_s`` for the rest of its burst (one append, fsync and PUBACK write).
        Below ``trickle_rate`` readings/s appends are ``trickle_s`` apart at least.
        ``routed``: the inbox only ever gets this stream's topics (the MQTT listener
        routes before it submits), so readings are not routed again (``prepare``)."""
        self.name, self.store, self.rules = name, store, rules
        self.marks = marks if marks is not None else HighWaterMarks()
        self.deadletters, self.route, self.routed = deadletters, route, routed
        self.max_batch, self.window_s, self.retry_s = max_batch, window_s, retry_s
        self.gather_s, self.quiet_s = gather_s, quiet_s
        self.trickle_s, self.trickle_rate = trickle_s, trickle_rate
        self._appended_at = float("-inf")  # time.monotonic() of the last append
        #: readings/s over the last few appends (``AppendRate``): below trickle_rate,
        #: appends are spaced
        self._rate = float("inf")
        self._rates = AppendRate()
        self.inbox = inbox if inbox is not None else Inbox()
        #: where the MQTT adapter delivers: the inbox's own method, no extra call per message
        self.submit = self.inbox.submit
        self.inbox.set_gate(self._gate, max_batch)
        self.ack, self.on_durable, self.on_appended = ack, on_durable, on_appended
        self.observe_fsync = observe_fsync
        self.stats: IngestStats = self.inbox.stats
        self._acks = AckQueue(name, self.stats, deadletters, lambda acks: self.ack(acks),
                              self.inbox.wake.set)
        self._logged_at: dict[str, float] = {}  # kind -> time.monotonic() of its last line
        self._suppressed: Counter[str] = Counter()
        self._since = 0.0  # perf_counter() when the batch being written started to gather
        if store is not None:
            self._ct = ("content-type",
                        rules.content_type if rules else b"application/octet-stream")

    @property
    def queued(self) -> int:
        return len(self.inbox)

    # -- the batch loop ------------------------------------------------------------------

    async def run(self) -> None:
        inbox, wake, acks = self.inbox, self.inbox.wake, self._acks
        acks.failed = None  # a new run: the failure that ended the last one was raised
        acks.pump()
        inbox.resume()  # restarted after a failure: the inbox may hold readings already
        while True:
            await wake.wait()  # at the gate's time (``_gate``), a full batch or a hurry
            if acks.failed is not None:  # acknowledging failed: end, to be restarted (G9)
                raise acks.failed
            self._since = inbox.since  # the readings' wait started (gathering included)
            wake.clear()
            while inbox.messages:
                msgs = inbox.take(self.max_batch)
                try:
                    p = self._prepare(msgs)
                except Exception as exc:  # a bug outside any one message: never stop
                    p = self._prepare_failed(msgs, exc)
                await self._write(p)
                acks.push(p)
            if inbox.urgent:  # after the append: the commit must cover those readings
                inbox.urgent = False
                if self.store is not None:
                    self.store.log.hurry_commit()
                self.deadletters.hurry_commit()

    def _gate(self) -> float:
        """Until when a batch whose first reading arrives now may gather (``Inbox``): the
        batch window if one is set; else until the log's next commit could start, and
        after a quiet spell for the burst's ``gather_s``.

        At a trickle (the last few appends' readings came slower than ``trickle_rate``), at
        least ``trickle_s`` after the last append: at 100 readings/s an append, fsync and
        PUBACK write every 10-100 ms was two thirds of the agent's CPU, and a trickle's
        records wait for the uplink's ``min_batch_linger_ms`` anyway. A reading after a
        longer pause goes at once; a full batch, or the listener's ``hurry`` (every device
        waits for a PUBACK), still wakes the pipeline early."""
        now = time.monotonic()
        if self.window_s > 0:
            return now + self.window_s
        if self.store is None:
            return 0.0
        quiet = now - self._appended_at > self.quiet_s
        due = max(self.store.log.commit_due_at(), now + self.gather_s if quiet else 0.0)
        if self._rate < self.trickle_rate:
            return max(due, self._appended_at + self.trickle_s)
        return due

    async def _write(self, p: Pending) -> None:
        if p.dead:
            p.dl_last = self.deadletters.append(p.dead)
        if not p.records:
            return
        assert self.store is not None
        log_ = self.store.log
        k = len(p.records)
        while p.records:
            try:
                _first, last = log_.append(p.records[:k])
            except LogFull as exc:
                if k > 1:  # try a smaller prefix: part of the batch may fit
                    k //= 2
                    continue
                self._block(p, f"{type(exc).__name__}: {exc}")
            except InvalidRecord as exc:
                # The log cannot encode some record (too large a batch or header): halve
                # until the culprit is alone, then dead-letter it and go on.
                if k > 1:
                    k //= 2
                    continue
                self._unstorable(p, exc)
                k = len(p.records)
                continue
            except Exception as exc:  # LogError, OSError, or a bug: hold and retry
                self._block(p, f"{type(exc).__name__}: {exc}")
            else:
                self._appended(p, k, last)
                k = len(p.records)
                continue
            if not p.records:
                break
            await asyncio.sleep(self.retry_s)
            k = len(p.records)

    def _unstorable(self, p: Pending, exc: BaseException) -> None:
        """Dead-letter the first record of ``p``, which the log refuses on its own."""
        rec = p.records.pop(0)
        device, _seq, qos, _boot, topic = p.meta.pop(0)
        entry = DeadLetter(self.name, topic, "internal", f"cannot be stored: {exc}"[:200],
                           device, rec.value, qos)
        self.stats.internal_errors += 1
        self.stats.dead_lettered += 1
        last = self.deadletters.append([entry])
        if last is not None:
            p.dl_last = last if p.dl_last is None else max(p.dl_last, last)
        # The marks are advanced only by appended records (_appended): this one never
        # reached the log, so it leaves them as they were.
        if self._may_log("internal"):
            log.error("stream %s: a reading of %s cannot be stored (%s); dead-lettered",
                      self.name, device, exc)

    def _appended(self, p: Pending, k: int, last: int) -> None:
        st = self.stats
        self.marks.apply([(dev, boot, seq) for dev, seq, _q, boot, _t in p.meta[:k]
                          if seq is not None])
        del p.records[:k]
        del p.meta[:k]
        st.appended += k
        st.batches += 1
        now = time.monotonic()
        self._rate = self._rates.add(now, k)
        self._appended_at = now
        # One waiter per append serves the forwarder (woken in _durable_done) and the
        # PUBACKs (the ack loop awaits it). QoS 0 batches have no PUBACKs and feed the
        # fsync histogram only one in 16, which is enough for it.
        fut = self.store.log.durable_future(last)  # type: ignore[union-attr]
        if p.acks or st.batches % 16 == 1:
            fut.add_done_callback(partial(self._durable_done, self._since))
            p.durable.append(fut)
        else:
            fut.add_done_callback(partial(self._durable_done, None))
        if self.inbox.blocked:
            self.inbox.blocked = False
            st.held = 0
            st.blocked_since = None
            st.write_error = ""
            log.info("stream %s: appends succeed again, ingest resumed", self.name)
        self.on_appended()

    def _durable_done(self, t_append: float | None, fut: asyncio.Future[None]) -> None:
        """An append is durable (or its fsync failed): its records may leave.

        A failed fsync is the ack loop's to report (it stops acknowledging); the error is
        retrieved here so asyncio does not log it as never retrieved. The forwarder is
        woken either way: it finds nothing new to send and carries on with the rest."""
        if not fut.cancelled() and fut.exception() is None and t_append is not None:
            self.observe_fsync(time.perf_counter() - t_append)
        self.on_durable()
        self._acks.pump()

    def _block(self, p: Pending, error: str) -> None:
        """An append failed: drop QoS 0 readings, keep QoS 1 ones for the retry."""
        st = self.stats
        if not self.inbox.blocked:
            self.inbox.blocked = True
            st.blocked_since = time.time()
            log.warning("stream %s: cannot append (%s); holding QoS 1 readings unacknowledged",
                        self.name, error)
        st.write_error = st.last_error = error
        keep = [i for i, m in enumerate(p.meta) if m[2] != 0]
        dropped = len(p.meta) - len(keep)
        if dropped:
            st.dropped["full"] += dropped
            p.records = [p.records[i] for i in keep]
            p.meta = [p.meta[i] for i in keep]
        st.held = len(p.records)
