"""The position state machine: each rule, the tables, exactly-once, and the sender."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uplink import (
    REFUSAL_RULES,
    RULES,
    Ack,
    AckStatus,
    Batch,
    Decision,
    DecisionKind,
    LocalProtocolError,
    Refusal,
    RefusalCode,
    RefusalMove,
    RemoteProtocolError,
    SenderState,
    UplinkRecord,
    decide,
    reply_for,
)
from uplink._positions import REPLIES

POSITION = ("edge-1", "telemetry", "gen-1")


def record(offset: int) -> UplinkRecord:
    return UplinkRecord(offset, b"dev-%d" % (offset % 4), 1_000 + offset, b"v%d" % offset)


def batch_over(log: list[UplinkRecord], base: int, last: int) -> Batch:
    """What the edge sends for [base, last]: whatever records its log still has there."""
    return Batch(*POSITION, base, last, tuple(r for r in log if base <= r.offset <= last))


def batch(base: int, last: int, missing: tuple[int, ...] = ()) -> Batch:
    log = [record(o) for o in range(base, last + 1) if o not in missing]
    return batch_over(log, base, last)


# --- each rule ---------------------------------------------------------------


def test_unknown_generation_starts_at_whatever_offset_the_batch_says() -> None:
    b = batch(500, 509)
    decision = decide(None, b)
    assert decision == Decision(DecisionKind.NEW_GENERATION, b.records, 509)
    assert reply_for(b, decision) == Ack(*POSITION, 509, AckStatus.WRITTEN)


def test_batch_right_after_the_acked_offset_is_written_whole() -> None:
    b = batch(10, 19, missing=(12, 19))
    decision = decide(9, b)
    assert decision == Decision(DecisionKind.WRITE, b.records, 19)
    # the whole range counts as delivered, including the lost 12 and 19
    assert reply_for(b, decision) == Ack(*POSITION, 19, AckStatus.WRITTEN)


@pytest.mark.parametrize("acked", [19, 20, 1000])
def test_batch_wholly_acked_already_is_a_duplicate(acked: int) -> None:
    b = batch(10, 19)
    decision = decide(acked, b)
    assert decision == Decision(DecisionKind.DUPLICATE, (), acked)
    assert reply_for(b, decision) == Ack(*POSITION, acked, AckStatus.DUPLICATE)


@pytest.mark.parametrize(
    ("acked", "first_written"),
    [(10, 11), (14, 15), (15, 16), (18, 19), (12, 13)],
)
def test_overlapping_batch_writes_only_the_tail(acked: int, first_written: int) -> None:
    b = batch(10, 19, missing=(13,))
    decision = decide(acked, b)
    assert decision.kind is DecisionKind.PARTIAL
    assert [r.offset for r in decision.records_to_write] == [
        o for o in range(first_written, 20) if o != 13
    ]
    assert decision.new_acked_offset == 19
    assert reply_for(b, decision) == Ack(*POSITION, 19, AckStatus.PARTIAL)


def test_partial_whose_tail_is_all_lost_writes_nothing_but_advances() -> None:
    b = batch(10, 19, missing=(16, 17, 18, 19))
    decision = decide(15, b)
    assert decision == Decision(DecisionKind.PARTIAL, (), 19)


@pytest.mark.parametrize("acked", [-1, 0, 8])
def test_batch_after_a_gap_is_refused_with_the_expected_offset(acked: int) -> None:
    b = batch(10, 19)
    decision = decide(acked, b)
    assert decision == Decision(DecisionKind.GAP, (), acked, expected_offset=acked + 1)
    reply = reply_for(b, decision)
    assert isinstance(reply, Refusal)
    assert (reply.code, reply.expected_offset) == (RefusalCode.GAP, acked + 1)


def test_first_batch_of_a_known_but_empty_generation() -> None:
    # acked -1: the generation starts at 0 and nothing is durable yet
    assert decide(-1, batch(0, 4)).kind is DecisionKind.WRITE
    assert decide(-1, batch(1, 4)).kind is DecisionKind.GAP


# --- the tables --------------------------------------------------------------


@given(
    acked=st.integers(-1, 60),
    base=st.integers(0, 60),
    length=st.integers(0, 60),
)
def test_for_a_known_generation_exactly_one_rule_applies(
    acked: int, base: int, length: int
) -> None:
    last = base + length
    matching = [kind for _, applies, kind in RULES if applies(acked, base, last)]
    assert len(matching) == 1
    assert matching[0] is not DecisionKind.NEW_GENERATION
    assert decide(acked, batch(base, last)).kind is matching[0]


def test_every_decision_has_a_reply() -> None:
    assert set(REPLIES) == set(DecisionKind)
    assert {kind for _, _, kind in RULES} == set(DecisionKind)


# --- exactly once ------------------------------------------------------------


@st.composite
def delivery_histories(draw: st.DrawFn) -> tuple[int | None, list[UplinkRecord], list[tuple]]:
    """An edge log with holes, and the batches that reach the broker in any order.

    Retries, overlaps, duplicates and reordering are all arbitrary ranges.  The
    one constraint is the sender's: for an unknown generation, the batch that
    reaches the broker first starts at the log start (SenderState keeps one
    batch in flight until the first reply).
    """
    start = draw(st.integers(0, 30))
    end = start + draw(st.integers(1, 60))  # offsets [start, end)
    log = [record(o) for o in range(start, end) if draw(st.booleans()) or o == end - 1]
    ranges = []
    for _ in range(draw(st.integers(0, 25))):
        base = draw(st.integers(start, end - 1))
        ranges.append((base, draw(st.integers(base, end - 1))))
    known = draw(st.booleans())
    if not known:
        ranges.insert(0, (start, draw(st.integers(start, end - 1))))
    return (start - 1 if known else None), log, ranges


@given(history=delivery_histories(), step=st.integers(1, 20))
def test_any_delivery_history_writes_each_record_once_in_order(
    history: tuple[int | None, list[UplinkRecord], list[tuple]], step: int
) -> None:
    acked, log, ranges = history
    end = log[-1].offset
    stored: list[UplinkRecord] = []

    def deliver(base: int, last: int) -> None:
        nonlocal acked
        decision = decide(acked, batch_over(log, base, last))
        stored.extend(decision.records_to_write)
        acked = decision.new_acked_offset
        # at every step the store is exactly the log's prefix up to the acked offset
        assert stored == [r for r in log if r.offset <= acked]

    for base, last in ranges:
        deliver(base, last)
    # then the sender keeps going from what the broker expects, as it would
    # after its refusals and acks, until the log is delivered.
    assert acked is not None
    while acked < end:
        deliver(acked + 1, min(end, acked + step))
    assert stored == log


# --- the sender --------------------------------------------------------------


def sender(acked: int = -1, window: int = 100) -> SenderState:
    return SenderState(*POSITION, acked_offset=acked, max_in_flight=window)


def ack(offset: int, status: AckStatus = AckStatus.WRITTEN) -> Ack:
    return Ack(*POSITION, offset, status)


def test_sender_sends_from_after_the_acked_offset() -> None:
    s = sender(acked=41)
    assert s.next_offset == 42
    assert s.next_range(log_end=42, max_records=10) is None  # nothing new in the log
    assert s.next_range(log_end=50, max_records=5) == (42, 46)
    assert s.in_flight == 5


def test_only_one_batch_in_flight_until_the_first_reply() -> None:
    s = sender()
    assert s.next_range(log_end=100, max_records=10) == (0, 9)
    assert s.next_range(log_end=100, max_records=10) is None
    s.on_ack(ack(9))
    assert s.next_range(log_end=100, max_records=10) == (10, 19)
    assert s.next_range(log_end=100, max_records=10) == (20, 29)


def test_a_refusal_also_confirms_the_generation() -> None:
    s = sender(acked=9)
    assert s.next_range(log_end=100, max_records=10) == (10, 19)
    s.on_refusal(Refusal(RefusalCode.GAP, 10))
    assert s.confirmed
    assert s.next_range(log_end=100, max_records=10) == (10, 19)
    assert s.next_range(log_end=100, max_records=10) == (20, 29)


def test_window_limits_offsets_in_flight() -> None:
    s = sender(window=25)
    s.on_ack(ack(-1))
    assert s.next_range(log_end=1000, max_records=10) == (0, 9)
    assert s.next_range(log_end=1000, max_records=10) == (10, 19)
    assert s.next_range(log_end=1000, max_records=10) == (20, 24)
    assert s.next_range(log_end=1000, max_records=10) is None
    s.on_ack(ack(9))
    assert s.next_range(log_end=1000, max_records=100) == (25, 34)


def test_stale_acks_never_move_the_acked_offset_back() -> None:
    s = sender()
    s.on_ack(ack(-1))
    s.next_range(log_end=100, max_records=50)
    s.on_ack(ack(30))
    s.on_ack(ack(10, AckStatus.DUPLICATE))
    assert (s.acked_offset, s.next_offset) == (30, 50)


def test_an_ack_beyond_what_we_sent_skips_ahead() -> None:
    # we restarted without our acked offset; the broker has more than we sent
    s = sender()
    s.next_range(log_end=1000, max_records=10)
    s.on_ack(ack(500, AckStatus.DUPLICATE))
    assert (s.acked_offset, s.next_offset, s.in_flight) == (500, 501, 0)


def test_refusal_rewinds_and_drops_in_flight() -> None:
    s = sender(acked=9)
    s.on_ack(ack(9))
    for _ in range(3):
        s.next_range(log_end=1000, max_records=10)
    assert s.next_offset == 40
    s.on_refusal(Refusal(RefusalCode.GAP, 10))
    assert (s.acked_offset, s.next_offset) == (9, 10)


def test_stale_refusal_rewinds_only_to_our_acked_offset() -> None:
    s = sender(acked=9)
    s.on_ack(ack(9))
    s.next_range(log_end=1000, max_records=10)
    s.next_range(log_end=1000, max_records=10)
    s.on_ack(ack(19))
    s.on_refusal(Refusal(RefusalCode.GAP, 10))  # refused (20..29) before (10..19) landed
    assert (s.acked_offset, s.next_offset) == (19, 20)


def test_rewind_after_a_timeout() -> None:
    s = sender(acked=4)
    s.next_range(log_end=100, max_records=10)
    s.rewind()
    assert (s.next_offset, s.in_flight) == (5, 0)
    assert s.next_range(log_end=100, max_records=10) == (5, 14)


def test_ack_for_another_position_is_the_peers_fault() -> None:
    s = sender()
    with pytest.raises(RemoteProtocolError):
        s.on_ack(Ack("edge-1", "telemetry", "gen-2", 5, AckStatus.WRITTEN))
    assert s.acked_offset == -1


@pytest.mark.parametrize("kwargs", [{"acked_offset": -2}, {"acked_offset": 1, "max_in_flight": 0}])
def test_sender_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(LocalProtocolError):
        SenderState(*POSITION, **kwargs)
    with pytest.raises(LocalProtocolError):
        sender().next_range(log_end=10, max_records=0)


# --- refusals, stale checkpoints, too large: the sender's table -------------


@given(
    expected=st.integers(0, 60),
    acked=st.integers(-1, 60),
    sent=st.none() | st.integers(-2, 60),
)
def test_exactly_one_refusal_rule_applies(expected: int, acked: int, sent: int | None) -> None:
    matching = [move for _, applies, move in REFUSAL_RULES if applies(expected, acked, sent)]
    assert len(matching) == 1
    assert {move for _, _, move in REFUSAL_RULES} == set(RefusalMove)


def confirmed_sender(acked: int, claimed_up_to: int, window: int = 100) -> SenderState:
    """A confirmed sender at ``acked`` with ``(acked, claimed_up_to]`` in flight."""
    s = sender(acked=acked, window=window)
    s.on_ack(ack(acked))
    while s.next_offset <= claimed_up_to:
        s.next_range(log_end=claimed_up_to + 1, max_records=10)
    return s


# (acked, in flight up to, acked when the refused batch was built, expected, log start)
#   -> (move, acked_offset, next_offset, confirmed, max_in_flight)
REFUSAL_TABLE = [
    # a gap (the broker lost a reordered batch): resend from what it expects
    ((9, 39, 9, 10, 0), (RefusalMove.GAP, 9, 10, True, 100)),
    ((9, 39, 9, 20, 0), (RefusalMove.GAP, 9, 20, True, 100)),
    # refused before an ack we have since received: resend after our acked offset
    ((19, 29, 9, 10, 0), (RefusalMove.OVERTAKEN, 19, 20, True, 100)),
    # when the batch left is unknown: never assume the broker forgot
    ((19, 29, None, 10, 0), (RefusalMove.OVERTAKEN, 19, 20, True, 100)),
    # acked before the batch left: the broker restarted from a stale checkpoint
    ((299, 399, 299, 120, 0), (RefusalMove.REWIND, 119, 120, False, 100)),
    ((299, 399, 150, 120, 0), (RefusalMove.REWIND, 119, 120, False, 100)),
    # ... and the edge already freed 120..199: one batch may carry them as an empty range
    ((299, 399, 299, 120, 200), (RefusalMove.REWIND, 119, 120, False, 180)),
    # ... a log start below the expected offset does not widen the window
    ((299, 399, 299, 120, 50), (RefusalMove.REWIND, 119, 120, False, 100)),
]


@pytest.mark.parametrize(("given_", "then"), REFUSAL_TABLE)
def test_refusal_table(given_: tuple, then: tuple) -> None:
    acked, claimed, sent, expected, log_start = given_
    s = confirmed_sender(acked, claimed)
    move = s.on_refusal(Refusal(RefusalCode.GAP, expected), sent, log_start)
    assert (move, s.acked_offset, s.next_offset, s.confirmed, s.max_in_flight) == then


def test_after_a_rewind_one_batch_goes_until_the_broker_replies() -> None:
    s = confirmed_sender(299, 399)
    s.on_refusal(Refusal(RefusalCode.GAP, 120), 299, log_start=200)
    # one batch spans the freed 120..199 and 100 records the log still has
    assert s.next_range(log_end=1000, max_records=180) == (120, 299)
    assert s.next_range(log_end=1000, max_records=10) is None
    s.on_ack(ack(299, AckStatus.DUPLICATE))
    assert s.next_range(log_end=1000, max_records=10) == (300, 309)
    # a second rewind widens from the configured window, not from the widened one
    s.on_refusal(Refusal(RefusalCode.GAP, 250), 299, log_start=260)
    assert (s.acked_offset, s.max_in_flight) == (249, 110)


@pytest.mark.parametrize(
    ("batch_records", "refused", "then"),
    [
        (1000, 1000, (True, 500)),
        (1000, 300, (True, 150)),  # a short batch halves from its own size
        (400, 1000, (True, 200)),  # never above the current size
        (3, 2, (True, 1)),
        (1000, 1, (False, 1000)),  # a single record cannot be split: the caller stops
    ],
)
def test_too_large_halves_the_batch_and_gives_up_what_is_in_flight(
    batch_records: int, refused: int, then: tuple
) -> None:
    s = SenderState(*POSITION, acked_offset=9, max_in_flight=5000, batch_records=batch_records)
    s.on_ack(ack(9))
    s.next_range(log_end=5000)
    s.next_range(log_end=5000)
    in_flight = s.in_flight
    halved = s.on_too_large(refused)
    assert (halved, s.batch_records) == then
    assert s.in_flight == (0 if halved else in_flight)
    assert s.acked_offset == 9


def test_next_range_defaults_to_the_batch_size() -> None:
    s = SenderState(*POSITION, acked_offset=-1, batch_records=4)
    assert s.next_range(log_end=100) == (0, 3)
    with pytest.raises(LocalProtocolError):
        SenderState(*POSITION, acked_offset=-1, batch_records=0)


@given(
    acked=st.integers(-1, 30),
    claims=st.lists(st.integers(1, 20), max_size=6),
    confirmed=st.booleans(),
    window=st.integers(1, 40),
)
def test_may_claim_is_next_range_refusing_whatever_the_log_holds(
    acked: int, claims: list[int], confirmed: bool, window: int
) -> None:
    s = sender(acked=acked, window=window)
    if confirmed:
        s.on_ack(ack(acked))
    for n in claims:
        s.next_range(log_end=10_000, max_records=n)
    before = (s.acked_offset, s.next_offset)
    allowed = s.may_claim()
    assert (s.acked_offset, s.next_offset) == before
    assert allowed == (s.next_range(log_end=10_000, max_records=1) is not None)
