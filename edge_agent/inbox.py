"""The per-message edge of a stream's pipeline: the inbox the MQTT adapter fills.

Strategy: ``Inbox.submit`` is the only code that runs for every message before batching
(a list append and an event set, on the event loop thread), so it is kept apart from the
batch loop in ``ingest``. Splitting it out also untangles the wiring: the agent makes the
inbox, hands ``inbox.submit`` to the MQTT session, then makes the pipeline with the
session's ``ack``; nothing is assigned after construction (``agent.Agent._wire``).

While the pipeline cannot append (``blocked``, see ingest's back-pressure), QoS 0
readings are best effort and dropped here (counted as ``full``); QoS 1 ones queue and
stay unacknowledged, so Mosquitto holds the rest of the session.

The pipeline's ``gate`` says, when the first reading of a batch arrives, how long
readings may gather before the pipeline appends them (until its log's next commit could
start, or a burst's ``gather_ms``): the inbox then wakes the pipeline at that time, not at
once, so a batch costs the pipeline one wake-up, not one to start waiting and one to end
it. A full batch or a ``hurry`` wakes it early. ``hurry`` is the MQTT listener's word that
every device publishing to it is waiting for a PUBACK: the pipeline then asks its log to
commit what it appended without waiting out the commit spacing
(``ingest.StreamIngest.run``).

Not thread-safe: everything here runs on the agent's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from shared_log import Record

from .deadletter import DeadLetter

#: (topic, payload, qos, mid, connection epoch) as the MQTT adapter delivers it
InMessage = tuple[str, bytes, int, int, int]
#: (device, seq, qos, epoch, topic) of each record of a pending batch
Meta = tuple[str, "int | None", int, str, str]


@dataclass
class IngestStats:
    """Counters of one pipeline; exported by metrics.py and status.py at read time."""

    received: int = 0
    received_qos0: int = 0
    appended: int = 0
    batches: int = 0
    pubacks: int = 0
    deduplicated: int = 0
    dead_lettered: int = 0
    internal_errors: int = 0  # messages dead-lettered because handling them raised
    #: sequence restarts accepted, by cause ("epoch": a new boot epoch; "window": the
    #: sequence fell back further than the redelivery window)
    resets: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    held: int = 0  # QoS 1 messages waiting for room (back-pressure)
    blocked_since: float | None = None  # time.time() when appends started failing
    write_error: str = ""  # the current append failure; "" when appends succeed
    last_error: str = ""


class Inbox:
    """Messages waiting for the pipeline's next batch, and the event that wakes it."""

    __slots__ = ("_gate", "_limit", "_timer", "blocked", "messages", "since", "stats",
                 "urgent", "wake")

    def __init__(self, stats: IngestStats | None = None) -> None:
        self.messages: list[InMessage] = []
        self.wake = asyncio.Event()
        self.blocked = False  # set by the pipeline while appends fail
        self.urgent = False  # commit without waiting out the spacing (see ``hurry``)
        self.since = 0.0  # time.perf_counter() when the first waiting message arrived
        self._gate: Callable[[], float] | None = None
        self._limit = 0
        self._timer: asyncio.TimerHandle | None = None  # wakes the pipeline at the gate
        self.stats = stats if stats is not None else IngestStats()

    def set_gate(self, gate: Callable[[], float], limit: int) -> None:
        """``gate()``: the ``time.monotonic()`` until which a batch whose first reading
        arrives now may gather (in the past: append at once); ``limit`` readings wake the
        pipeline anyway."""
        self._gate, self._limit = gate, limit

    def submit(self, msg: InMessage) -> None:
        """Take one message from the MQTT adapter (called for every message: keep it cheap)."""
        if self.blocked and msg[2] == 0:
            st = self.stats
            st.received += 1
            st.received_qos0 += 1
            st.dropped["full"] += 1
            return
        messages = self.messages
        messages.append(msg)
        if self._timer is not None:  # gathering: a full batch goes now
            if len(messages) >= self._limit:
                self._ring()
        elif len(messages) == 1 and not self.wake.is_set():  # the first of a batch
            self.since = time.perf_counter()
            gate = self._gate
            seconds = gate() - time.monotonic() if gate is not None else 0.0
            if seconds > 0 and self._limit > 1:
                self._timer = asyncio.get_running_loop().call_later(seconds, self._ring)
            else:
                self.wake.set()
        else:
            self.wake.set()

    def resume(self) -> None:
        """The pipeline (re)starts: readings already waiting wake it, unless they are
        gathering (their timer wakes it)."""
        if self.messages and self._timer is None:
            self.wake.set()

    def _ring(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wake.set()

    def hurry(self) -> None:
        """Every publisher waits for a PUBACK: have what is appended committed now."""
        self.urgent = True
        self._ring()

    def take(self, max_batch: int) -> list[InMessage]:
        """Up to ``max_batch`` messages in arrival order (empty when none wait)."""
        if len(self.messages) <= max_batch:
            msgs, self.messages = self.messages, []
            if self._timer is not None:  # taken early (the pipeline was busy): no ring
                self._timer.cancel()
                self._timer = None
            return msgs
        msgs = self.messages[:max_batch]
        del self.messages[:max_batch]
        return msgs

    def __len__(self) -> int:
        return len(self.messages)


class Pending:
    """A batch on its way from the inbox to the PUBACKs (``ingest.StreamIngest``)."""

    __slots__ = ("acks", "dead", "dl_last", "durable", "meta", "records")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.meta: list[Meta] = []
        self.dead: list[DeadLetter] = []
        self.acks: list[tuple[int, int]] = []
        self.dl_last: int | None = None
        self.durable: list[asyncio.Future[None]] = []
