"""The pure group state machine and the assignors, driven directly (no I/O, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_broker.groups import (
    ASSIGNORS,
    AssignorMismatch,
    Group,
    GroupActive,
    GroupState,
    MemberInUse,
    NotAssigned,
    RebalanceInProgress,
    StaleGeneration,
    UnknownMember,
    assign_range,
    assign_round_robin,
)

COUNTS = {"t": 8, "u": 3}
S = 1000  # session timeout (ms)


def test_range_gives_contiguous_ranges_extra_to_the_first() -> None:
    got = assign_range({"b": ["t"], "a": ["t"], "c": ["t"]}, COUNTS)
    assert got == {"a": [("t", 0), ("t", 1), ("t", 2)], "b": [("t", 3), ("t", 4), ("t", 5)],
                   "c": [("t", 6), ("t", 7)]}


def test_round_robin_deals_in_turn_and_skips_unsubscribed() -> None:
    got = assign_round_robin({"a": ["t", "u"], "b": ["t"]}, COUNTS)
    assert got["a"] == [("t", 0), ("t", 2), ("t", 4), ("t", 6), ("u", 0), ("u", 1), ("u", 2)]
    assert got["b"] == [("t", 1), ("t", 3), ("t", 5), ("t", 7)]


@given(members=st.dictionaries(st.text("abcdef", min_size=1, max_size=3),
                               st.sets(st.sampled_from(["t", "u"]), min_size=1),
                               min_size=1, max_size=7),
       assignor=st.sampled_from(sorted(ASSIGNORS)))
def test_assignments_cover_every_partition_once(members: dict[str, set[str]],
                                                assignor: str) -> None:
    subs = {m: sorted(ts) for m, ts in members.items()}
    got = ASSIGNORS[assignor](subs, COUNTS)
    owned = [tp for tps in got.values() for tp in tps]
    wanted = [(t, p) for t in sorted({t for ts in subs.values() for t in ts})
              for p in range(COUNTS[t])]
    assert sorted(owned) == wanted
    for m, tps in got.items():
        assert all(t in subs[m] for t, _ in tps)
    if assignor == "range":  # per topic, shares differ by at most one
        for t in {t for ts in subs.values() for t in ts}:
            shares = [sum(1 for tt, _ in tps if tt == t) for m, tps in got.items()
                      if t in subs[m]]
            assert max(shares) - min(shares) <= 1


def _stable_pair() -> Group:
    g = Group("g")
    assert g.join("a", ["t"], S, None, COUNTS, 0.0)
    assert not g.join("b", ["t"], S, None, COUNTS, 0.1)  # waits for a
    assert g.join("a", ["t"], S, None, COUNTS, 0.2)  # a rejoins: barrier complete
    assert g.ready("b") and g.generation == 2 and g.state is GroupState.STABLE
    return g


def test_first_join_is_ready_at_once() -> None:
    g = Group("g")
    assert g.join("a", ["t"], S, None, COUNTS, 0.0)
    assert (g.generation, g.state, g.assignment["a"]) == (
        1, GroupState.STABLE, [("t", p) for p in range(8)])
    assert g.join("a", ["t"], S, None, COUNTS, 0.1)  # unchanged rejoin: no rebalance
    assert g.generation == 1


def test_new_member_waits_until_the_others_rejoin() -> None:
    g = Group("g")
    g.join("a", ["t"], S, None, COUNTS, 0.0)
    assert not g.join("b", ["t"], S, None, COUNTS, 0.1)
    assert g.state is GroupState.REBALANCING and g.generation == 1
    with pytest.raises(RebalanceInProgress):
        g.heartbeat("a", 1, COUNTS, 0.2)
    g.check_commit("a", 1, [("t", 7)], 0.25)  # the old owner may still commit
    with pytest.raises(NotAssigned):
        g.check_commit("b", 1, [("t", 7)], 0.25)
    assert g.join("a", ["t"], S, None, COUNTS, 0.3)
    assert g.ready("b") and g.generation == 2
    assert g.assignment == {"a": [("t", p) for p in range(4)],
                            "b": [("t", p) for p in range(4, 8)]}


def test_stale_generation_and_foreign_partitions_are_refused() -> None:
    g = _stable_pair()
    with pytest.raises(StaleGeneration):
        g.heartbeat("a", 1, COUNTS, 0.3)
    with pytest.raises(StaleGeneration):
        g.check_commit("a", 1, [("t", 0)], 0.3)
    with pytest.raises(NotAssigned):
        g.check_commit("a", 2, [("t", 5)], 0.3)
    with pytest.raises(UnknownMember):
        g.check_commit("zz", 2, [("t", 0)], 0.3)
    with pytest.raises(GroupActive):
        g.check_commit(None, None, [("t", 0)], 0.3)
    g.check_commit("a", 2, [("t", 0), ("t", 3)], 0.3)


def test_expired_member_is_dropped_and_the_rest_take_over() -> None:
    g = _stable_pair()
    g.heartbeat("a", 2, COUNTS, 0.9)
    assert not g.tick(1.0, COUNTS)  # b last seen at 0.1: not yet expired
    assert g.tick(1.3, COUNTS)  # b expired -> rebalance, a must rejoin
    assert g.state is GroupState.REBALANCING and "b" not in g.members
    with pytest.raises(UnknownMember):
        g.heartbeat("b", 2, COUNTS, 1.3)
    with pytest.raises(UnknownMember):
        g.check_commit("b", 2, [("t", 5)], 1.3)
    assert g.join("a", ["t"], S, None, COUNTS, 1.4)
    assert g.generation == 3 and g.assignment == {"a": [("t", p) for p in range(8)]}


def test_deadline_drops_members_that_never_rejoin() -> None:
    g = _stable_pair()
    assert not g.join("c", ["t"], S, None, COUNTS, 0.5)  # deadline: 0.5 + 1 s
    for now in (0.8, 1.1, 1.4):  # a and b stay alive but never rejoin
        for m in ("a", "b"):
            with pytest.raises(RebalanceInProgress):
                g.heartbeat(m, 2, COUNTS, now)
    assert not g.ready("c")
    assert g.tick(1.6, COUNTS)
    assert g.ready("c") and set(g.members) == {"c"} and g.generation == 3


def test_expired_session_cannot_commit_before_the_sweep() -> None:
    g = _stable_pair()
    with pytest.raises(UnknownMember):
        g.check_commit("b", 2, [("t", 5)], 5.0)


def test_leave_rebalances_and_last_leave_empties() -> None:
    g = _stable_pair()
    g.leave("b", COUNTS, 0.3)
    assert g.state is GroupState.REBALANCING
    assert g.join("a", ["t"], S, None, COUNTS, 0.4)
    g.leave("a", COUNTS, 0.5)
    assert g.state is GroupState.EMPTY and g.generation == 4 and not g.assignment
    g.check_commit(None, None, [("t", 1)], 0.6)  # standalone commits once empty
    with pytest.raises(UnknownMember):
        g.leave("a", COUNTS, 0.7)


def test_partition_growth_and_subscription_change_rebalance() -> None:
    g = Group("g")
    g.join("a", ["t"], S, None, COUNTS, 0.0)
    with pytest.raises(RebalanceInProgress):
        g.heartbeat("a", 1, {**COUNTS, "t": 9}, 0.1)
    assert g.join("a", ["t"], S, None, {**COUNTS, "t": 9}, 0.2)
    assert len(g.assignment["a"]) == 9 and g.generation == 2
    assert g.join("a", ["t", "u"], S, None, {**COUNTS, "t": 9}, 0.3)  # alone: completes
    assert g.generation == 3 and len(g.assignment["a"]) == 12


def test_assignor_is_fixed_while_members_exist() -> None:
    g = Group("g")
    g.join("a", ["t"], S, "roundrobin", COUNTS, 0.0)
    with pytest.raises(AssignorMismatch):
        g.join("b", ["t"], S, "range", COUNTS, 0.1)
    with pytest.raises(ValueError):
        g.join("b", ["t"], 5, None, COUNTS, 0.1)
    with pytest.raises(ValueError):
        g.join("b", ["t"], S, "sticky", COUNTS, 0.1)


def test_round_trip_restarts_sessions_and_rebalances() -> None:
    g = _stable_pair()
    back = Group.from_dict(g.to_dict(), now=50.0)
    assert (back.generation, back.assignment, back.state) == (
        g.generation, g.assignment, GroupState.STABLE)
    assert not back.tick(50.5, COUNTS)  # sessions restarted at 50.0
    assert not back.join("c", ["t"], S, None, COUNTS, 50.6)
    again = Group.from_dict(back.to_dict(), now=60.0)
    assert again.state is GroupState.REBALANCING and again.pending == set()
    assert again.deadline == 61.0


# -- member secrets: only the member itself can act for it ----------------------------


def test_a_member_secret_guards_heartbeat_commit_leave_and_rejoin() -> None:
    g = Group("dash")
    assert g.join("dash-1", ["t"], S, None, COUNTS, 0.0, None, "s1")
    assert g.secret_of("dash-1", None, "s1") == "s1"
    for act in (lambda s: g.heartbeat("dash-1", 1, COUNTS, 0.1, s),
                lambda s: g.check_commit("dash-1", 1, [("t", 0)], 0.1, s),
                lambda s: g.leave("dash-1", COUNTS, 0.1, s)):
        for wrong in (None, "", "s2"):
            with pytest.raises(UnknownMember, match="member_secret"):
                act(wrong)
    for wrong in (None, "s2"):  # nobody else can take the id over while it lives
        with pytest.raises(MemberInUse):
            g.join("dash-1", ["t"], S, None, COUNTS, 0.2, wrong, "s3")
    assert g.members["dash-1"].proves("s1") and g.generation == 1
    assert g.join("dash-1", ["t"], S, None, COUNTS, 0.3, "s1", "s4")  # its own rejoin
    assert g.secret_of("dash-1", "s1", "s4") == "s1"
    g.heartbeat("dash-1", 1, COUNTS, 0.4, "s1")
    g.check_commit("dash-1", 1, [("t", 0)], 0.4, "s1")
    g.leave("dash-1", COUNTS, 0.5, "s1")
    assert g.state is GroupState.EMPTY


def test_an_expired_members_id_is_free_again_and_secrets_survive_a_round_trip() -> None:
    g = Group("dash")
    g.join("dash-1", ["t"], S, None, COUNTS, 0.0, None, "s1")
    restored = Group.from_dict(g.to_dict(), 10.0)
    assert "s1" not in str(restored.to_dict())  # only the digest is kept
    restored.heartbeat("dash-1", 1, COUNTS, 10.1, "s1")
    with pytest.raises(UnknownMember):
        restored.heartbeat("dash-1", 1, COUNTS, 10.1, "s2")
    # after its session expired, a new process may use the id, with a new secret
    assert restored.join("dash-1", ["t"], S, None, COUNTS, 12.0, None, "s2")
    assert restored.secret_of("dash-1", None, "s2") == "s2"
    with pytest.raises(UnknownMember):
        restored.heartbeat("dash-1", restored.generation, COUNTS, 12.1, "s1")
