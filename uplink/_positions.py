"""The position state machine of G3 (exactly-once into the cloud), both sides.

Strategy: the broker's whole exactly-once logic is one comparison of the
batch's offset range against the last durable offset of its (edge, stream,
generation).  It is written as data, ``RULES``: an ordered table of
(condition, decision) that ``decide`` walks, and ``REPLIES``, which maps each
decision to what the edge is told.  The same tables are printed in
docs/protocol.md and checked by the tests to be exhaustive and exclusive.
Nothing here does I/O or keeps state across calls on the broker side; the
caller loads ``acked_offset``, writes ``records_to_write`` durably, stores
``new_acked_offset`` and only then replies (G1).

Why an unknown generation may start at any offset: the edge only ever sends
from its acked offset, which for a generation the broker has never
acknowledged is the start of its log.  That start need not be 0 (full-disk
``drop_oldest`` may have freed segments first), so the broker takes the first
batch's ``base_offset``.  It is only safe if that first batch really is the
first one: ``SenderState`` therefore keeps a single batch in flight until the
broker has replied once for the generation, so a reordered later batch can
never be the one that starts it.

The edge side, ``SenderState``, is a small mutable object (like h11's
connection state): which offsets are acked, which are in flight, how many
records a batch may carry, and how acks, refusals, timeouts and "too large"
move them.  Every sender rule lives here; the forwarder only does I/O.  Acks
never move ``acked_offset`` backwards.  One rule does: a refusal expecting an
offset the broker had acked *before the refused batch left* means the broker
restarted from a stale state checkpoint (its acked offset never goes back
within one process), so the sender rewinds to the broker's expected offset
(``REFUSAL_RULES``, ``RefusalMove.REWIND``).  The broker's per-partition marks
make that resend harmless.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from ._errors import LocalProtocolError, RemoteProtocolError
from ._types import Ack, AckStatus, Batch, Refusal, RefusalCode, UplinkRecord


class DecisionKind(enum.Enum):
    """What the broker does with a batch."""

    NEW_GENERATION = "new_generation"  # generation unknown: start it at this batch, write all
    WRITE = "write"  # starts right after the durable prefix: write all
    PARTIAL = "partial"  # overlaps the durable prefix: write only the records after it
    DUPLICATE = "duplicate"  # wholly inside the durable prefix: write nothing, ack again
    GAP = "gap"  # starts after the expected offset: write nothing, refuse


# (acked, base, last) -> does the rule apply.  Walked in order, first match
# wins; for a known generation exactly one of the last four applies.
Condition = Callable[[int | None, int, int], bool]
RULES: tuple[tuple[str, Condition, DecisionKind], ...] = (
    ("acked is None", lambda acked, base, last: acked is None, DecisionKind.NEW_GENERATION),
    ("base == acked + 1", lambda acked, base, last: base == acked + 1, DecisionKind.WRITE),
    ("last <= acked", lambda acked, base, last: last <= acked, DecisionKind.DUPLICATE),
    ("base <= acked < last", lambda acked, base, last: base <= acked < last, DecisionKind.PARTIAL),
    ("base > acked + 1", lambda acked, base, last: base > acked + 1, DecisionKind.GAP),
)

# What the edge is told for each decision: an ack status, or a refusal code.
REPLIES: dict[DecisionKind, AckStatus | RefusalCode] = {
    DecisionKind.NEW_GENERATION: AckStatus.WRITTEN,
    DecisionKind.WRITE: AckStatus.WRITTEN,
    DecisionKind.PARTIAL: AckStatus.PARTIAL,
    DecisionKind.DUPLICATE: AckStatus.DUPLICATE,
    DecisionKind.GAP: RefusalCode.GAP,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of ``decide``: what to write and the durable offset afterwards.

    ``new_acked_offset`` is the offset to store (and ack) once
    ``records_to_write`` are durable; for GAP it is the unchanged old one and
    ``expected_offset`` is where the edge must resume.
    """

    kind: DecisionKind
    records_to_write: Sequence[UplinkRecord]  # a tuple or a RecordBlock, as the batch's
    new_acked_offset: int
    expected_offset: int | None = None


_offset_of = attrgetter("offset")


def decide(acked_offset: int | None, batch: Batch) -> Decision:
    """Classify ``batch`` against the last durable offset of its position.

    ``acked_offset`` is None when the broker has never seen this
    (edge, stream, generation).
    """
    if acked_offset is not None and (type(acked_offset) is not int or acked_offset < -1):
        raise LocalProtocolError(f"acked_offset {acked_offset!r} must be None or an int >= -1")
    base, last = batch.base_offset, batch.last_offset
    kind = next(kind for _, applies, kind in RULES if applies(acked_offset, base, last))
    if kind is DecisionKind.NEW_GENERATION or kind is DecisionKind.WRITE:
        return Decision(kind, batch.records, last)
    assert acked_offset is not None  # only NEW_GENERATION has no acked offset
    if kind is DecisionKind.DUPLICATE:
        return Decision(kind, (), acked_offset)
    if kind is DecisionKind.PARTIAL:
        records = batch.records
        offsets = getattr(records, "offsets", None)  # a RecordBlock: search its column
        start = (bisect.bisect_right(offsets, acked_offset) if offsets is not None
                 else bisect.bisect_right(records, acked_offset, key=_offset_of))
        return Decision(kind, records[start:], last)
    return Decision(kind, (), acked_offset, expected_offset=acked_offset + 1)


def reply_for(batch: Batch, decision: Decision) -> Ack | Refusal:
    """The reply to send once the decision's records are durable."""
    reply = REPLIES[decision.kind]
    if isinstance(reply, RefusalCode):
        assert decision.expected_offset is not None
        return Refusal(
            reply,
            decision.expected_offset,
            f"batch starts at {batch.base_offset}; expected {decision.expected_offset}",
        )
    return Ack(batch.edge_id, batch.stream, batch.generation, decision.new_acked_offset, reply)


class RefusalMove(enum.Enum):
    """What the sender does on a refusal; every move drops what is in flight."""

    REWIND = "rewind"  # the broker forgot acks it sent before the batch left: restart there
    OVERTAKEN = "overtaken"  # later acks overtook the refusal: resend after our acked offset
    GAP = "gap"  # the broker expects an offset past our acked one: resend from it


# (expected, acked, acked_when_sent) -> does the rule apply.  Walked in order,
# first match wins; exactly one applies (tests/uplink/test_positions.py).
# ``acked_when_sent`` is our acked offset when the refused batch was built,
# None when unknown (then the broker is never assumed to have forgotten).
RefusalCondition = Callable[[int, int, int | None], bool]
REFUSAL_RULES: tuple[tuple[str, RefusalCondition, RefusalMove], ...] = (
    ("expected <= min(acked_when_sent, acked)",
     lambda expected, acked, sent: sent is not None and expected <= min(sent, acked),
     RefusalMove.REWIND),
    ("expected <= acked",
     lambda expected, acked, sent: expected <= acked and (sent is None or expected > sent),
     RefusalMove.OVERTAKEN),
    ("expected > acked", lambda expected, acked, sent: expected > acked, RefusalMove.GAP),
)


@dataclass(slots=True)
class SenderState:
    """The edge's view of one (edge, stream, generation) uplink.

    Offsets ``<= acked_offset`` are durable in the cloud; ``[acked_offset + 1,
    next_offset)`` are in flight (sent, no reply yet).  ``acked_offset`` starts
    at the edge's last known ack, or ``log_start - 1`` for a fresh generation.
    Until the broker has replied once (``confirmed``) only one batch is in
    flight; see the module docstring for why.  ``batch_records`` is what one
    batch may carry (``next_range``'s default); ``on_too_large`` halves it.
    Not thread-safe.
    """

    edge_id: str
    stream: str
    generation: str
    acked_offset: int
    max_in_flight: int = 10_000
    batch_records: int = 1000
    next_offset: int = field(init=False)
    confirmed: bool = field(default=False, init=False)
    #: the configured window; a rewind widens ``max_in_flight`` from it
    window: int = field(init=False)

    def __post_init__(self) -> None:
        if type(self.acked_offset) is not int or self.acked_offset < -1:
            raise LocalProtocolError(f"acked_offset {self.acked_offset!r} must be an int >= -1")
        if type(self.max_in_flight) is not int or self.max_in_flight < 1:
            raise LocalProtocolError("max_in_flight must be a positive int")
        if type(self.batch_records) is not int or self.batch_records < 1:
            raise LocalProtocolError("batch_records must be a positive int")
        self.next_offset = self.acked_offset + 1
        self.window = self.max_in_flight

    @property
    def in_flight(self) -> int:
        """Offsets claimed by ``next_range`` and not yet acked."""
        return self.next_offset - self.acked_offset - 1

    def may_claim(self) -> bool:
        """Whether ``next_range`` could claim anything, whatever the log holds.

        False while the first batch of an unconfirmed generation is in flight
        or the window is full: the caller need not read the log at all.
        """
        return ((self.confirmed or not self.in_flight)
                and self.next_offset <= self.acked_offset + self.max_in_flight)

    def next_range(self, log_end: int, max_records: int | None = None) -> tuple[int, int] | None:
        """Claim the next inclusive offset range to send, or None if none may go now.

        ``log_end`` is the offset the edge log will assign next; the caller
        sends whatever records it still has in the range (missing ones are
        skipped, see ``Batch``).  ``max_records`` defaults to ``batch_records``.
        """
        if max_records is None:
            max_records = self.batch_records
        if max_records < 1:
            raise LocalProtocolError("max_records must be positive")
        if not self.confirmed and self.in_flight:
            return None
        base = self.next_offset
        last = min(log_end - 1, base + max_records - 1, self.acked_offset + self.max_in_flight)
        if last < base:
            return None
        self.next_offset = last + 1
        return base, last

    def on_ack(self, ack: Ack) -> None:
        """Advance on an ack; a stale ack (older than what we know) changes nothing."""
        self._check_position(ack)
        self.confirmed = True
        if ack.acked_offset > self.acked_offset:
            self.acked_offset = ack.acked_offset
            # The broker may know more than we sent (we restarted without our
            # acked offset): skip ahead rather than resend.
            self.next_offset = max(self.next_offset, ack.acked_offset + 1)

    def on_refusal(self, refusal: Refusal, acked_when_sent: int | None = None,
                   log_start: int | None = None) -> RefusalMove:
        """Drop everything in flight and resend as ``REFUSAL_RULES`` say; returns the move.

        ``acked_when_sent`` is our acked offset when the refused batch was
        built (None: unknown, never rewind).  A refusal older than our acked
        offset still drops what is in flight: the refused batch may be one we
        are waiting for, so we resend from there.  On ``REWIND`` the sender
        starts over at ``expected_offset - 1`` as for a new state (one batch in
        flight until the broker replies); ``log_start`` is the edge log's first
        offset, and the window is widened by the offsets freed below it so one
        batch can carry them as an empty range.
        """
        expected = refusal.expected_offset
        move = next(move for _, applies, move in REFUSAL_RULES
                    if applies(expected, self.acked_offset, acked_when_sent))
        if move is RefusalMove.REWIND:
            freed = 0 if log_start is None else max(0, log_start - expected)
            self.acked_offset = expected - 1
            self.next_offset = expected
            self.confirmed = False
            self.max_in_flight = self.window + freed
            return move
        self.confirmed = True
        self.next_offset = max(expected, self.acked_offset + 1)
        return move

    def on_too_large(self, records: int) -> bool:
        """The broker refused a batch of ``records`` records as too large (HTTP 413).

        Nothing of it was written.  A batch of several records halves
        ``batch_records`` and gives up everything in flight, to resend from the
        acked offset in smaller batches; returns True.  A single record cannot
        be split: returns False and changes nothing (the caller stops the stream).
        """
        if records <= 1:
            return False
        self.batch_records = max(1, min(self.batch_records, records) // 2)
        self.rewind()
        return True

    def rewind(self) -> None:
        """Give up on everything in flight (a timeout, a lost connection, a cancel)."""
        self.next_offset = self.acked_offset + 1

    def _check_position(self, ack: Ack) -> None:
        mine = (self.edge_id, self.stream, self.generation)
        theirs = (ack.edge_id, ack.stream, ack.generation)
        if mine != theirs:
            raise RemoteProtocolError(f"ack for {theirs} received by the sender of {mine}")
