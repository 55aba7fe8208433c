"""Consumer groups as a pure state machine: membership, assignment, commit checks.

Strategy: Kafka's eager group protocol with server-side assignment. A membership change
(a member joins, leaves or times out, a subscription or partition count changes) starts a
*rebalance*: every member hears ``rebalance_in_progress`` on its next heartbeat, may still
commit with its current generation, stops reading and joins again. Only when every
member has rejoined (or the rebalance deadline, the largest session timeout, dropped
those that did not) is the new assignment computed and the generation bumped. So a
partition's new owner starts after its old owner stopped, from the old owner's last
commit; and a commit is only accepted from a member of the current generation for
partitions it owns, so a zombie can never move an offset. At-least-once: only records
after the last commit are seen twice. No I/O and no clock here: calls take ``now``
(seconds) and the topics' partition counts; ``group_service`` adds time and persistence.

States and events (anything else raises one of the errors below)::

    event                      EMPTY             STABLE                 REBALANCING
    join, new/changed member   -> REBALANCING    -> REBALANCING         pending += member
    join, known, unchanged     -                 ready (no change)      pending += member
    all members pending        complete          -                      complete
    heartbeat                  UnknownMember     ok (gen checked)       RebalanceInProgress
    leave / session expired    UnknownMember     -> REBALANCING         dropped
    deadline passes            -                 -                      drop non-pending,
                                                                        complete
    commit, member + gen       UnknownMember     checked, stored        checked, stored
    commit, no member          stored            GroupActive            GroupActive

Members prove who they are with the ``secret`` the coordinator handed them at their
first join (only its SHA-256 is kept): heartbeat, commit and leave need it, and so does a
join that names a member id already in the group (a fresh instance waits, with
``member_in_use``, until the old one's session expired or it left). Without it any
reader could make another member leave or take its partitions by joining under its id.

``complete``: generation+1, assignment computed for the pending members,
-> STABLE (-> EMPTY if none are left). Errors, each with the ``code`` the HTTP layer
sends with its 409::

    GroupError
     ├── UnknownMember        "unknown_member"         not in the group (expired?), or
     │                                                 not with this secret: join
     ├── MemberInUse          "member_in_use"          the id belongs to a live member
     ├── StaleGeneration      "stale_generation"       the group moved on: join again
     ├── RebalanceInProgress  "rebalance_in_progress"  commit if you like, then join
     ├── NotAssigned          "not_assigned"           a partition another member owns
     ├── AssignorMismatch     "assignor_mismatch"      the group uses another strategy
     └── GroupActive          "group_active"           a commit without membership
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TopicPartition = tuple[str, int]
MIN_SESSION_MS = 100
MAX_SESSION_MS = 300_000


class GroupError(Exception):
    code = "group_error"
    #: set on a join's refusal when the member holds a secret by now (a first join that
    #: timed out at the barrier): the caller needs it to join again as the same member
    member_secret: str | None = None


class UnknownMember(GroupError):
    code = "unknown_member"


class MemberInUse(GroupError):
    code = "member_in_use"


class StaleGeneration(GroupError):
    code = "stale_generation"


class RebalanceInProgress(GroupError):
    code = "rebalance_in_progress"


class NotAssigned(GroupError):
    code = "not_assigned"


class AssignorMismatch(GroupError):
    code = "assignor_mismatch"


class GroupActive(GroupError):
    code = "group_active"


class GroupState(enum.Enum):
    EMPTY = "empty"  # no members; committed offsets stay
    STABLE = "stable"  # members, each with its share of the current generation
    REBALANCING = "rebalancing"  # waiting for the members to join again


Subscriptions = Mapping[str, Sequence[str]]  # member id -> topics
Assignment = dict[str, list[TopicPartition]]


def _topics(subs: Subscriptions) -> list[str]:
    return sorted({t for ts in subs.values() for t in ts})


def assign_range(subs: Subscriptions, counts: Mapping[str, int]) -> Assignment:
    """Per topic, contiguous ranges of partitions to the subscribed members in id order;
    the first ``count % members`` members get one more."""
    out: Assignment = {m: [] for m in subs}
    for topic in _topics(subs):
        members = sorted(m for m, ts in subs.items() if topic in ts)
        per, extra = divmod(counts.get(topic, 0), len(members))
        p = 0
        for i, m in enumerate(members):
            take = per + (i < extra)
            out[m].extend((topic, q) for q in range(p, p + take))
            p += take
    return out


def assign_round_robin(subs: Subscriptions, counts: Mapping[str, int]) -> Assignment:
    """All topic-partitions in order, dealt to the members in id order, skipping members
    not subscribed to the partition's topic."""
    out: Assignment = {m: [] for m in subs}
    members = sorted(subs)
    turn = 0
    for topic in _topics(subs):
        for p in range(counts.get(topic, 0)):
            for _ in range(len(members)):
                m = members[turn % len(members)]
                turn += 1
                if topic in subs[m]:
                    out[m].append((topic, p))
                    break
    return out


ASSIGNORS = {"range": assign_range, "roundrobin": assign_round_robin}


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(slots=True)
class Member:
    member_id: str
    topics: tuple[str, ...]
    session_timeout_ms: int
    last_seen: float
    #: None: joined without a secret (a state saved before secrets existed): unprotected
    #: until it joins again
    secret_sha256: str | None = None

    def proves(self, secret: str | None) -> bool:
        if self.secret_sha256 is None:
            return True
        return secret is not None and hmac.compare_digest(secret_digest(secret),
                                                          self.secret_sha256)


@dataclass
class Group:
    """One group. Not thread-safe: the coordinator calls it from one event loop."""

    name: str
    assignor: str = "range"
    generation: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    assignment: Assignment = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # partitions the assignment saw
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # committed
    state: GroupState = GroupState.EMPTY
    pending: set[str] = field(default_factory=set)  # rejoined during this rebalance
    deadline: float = 0.0  # when this rebalance stops waiting for the others

    def topics(self) -> list[str]:
        return _topics({m.member_id: m.topics for m in self.members.values()})

    def ready(self, member_id: str) -> bool:
        """True when ``member_id`` has an assignment in the current generation."""
        return self.state is GroupState.STABLE and member_id in self.members

    def _counts_changed(self, counts: Mapping[str, int]) -> bool:
        return any(counts.get(t, 0) != n for t, n in self.counts.items())

    def _begin(self, now: float) -> None:
        self.state = GroupState.REBALANCING
        self.pending = set()
        longest = max((m.session_timeout_ms for m in self.members.values()), default=0)
        self.deadline = now + longest / 1000

    def _complete(self, counts: Mapping[str, int]) -> None:
        for m in [m for m in self.members if m not in self.pending]:
            del self.members[m]
        self.generation += 1
        subs = {m.member_id: m.topics for m in self.members.values()}
        self.counts = {t: counts.get(t, 0) for t in _topics(subs)}
        self.assignment = ASSIGNORS[self.assignor](subs, self.counts) if subs else {}
        self.pending = set()
        self.state = GroupState.STABLE if self.members else GroupState.EMPTY

    def _membership_changed(self, now: float, counts: Mapping[str, int]) -> None:
        if not self.members:
            self._complete(counts)
        elif self.state is not GroupState.REBALANCING:
            self._begin(now)
        elif set(self.members) <= self.pending:
            self._complete(counts)

    def join(self, member_id: str, topics: Iterable[str], session_timeout_ms: int,
             assignor: str | None, counts: Mapping[str, int], now: float,
             secret: str | None = None, new_secret: str | None = None) -> bool:
        """Add or refresh a member. True: its assignment is ready; False: the rebalance
        waits for other members (ask ``ready`` again after ``tick`` or their joins).

        A known member must present its ``secret`` (MemberInUse otherwise); a new one is
        given ``new_secret`` (``secret_of`` tells the caller which one holds)."""
        if not MIN_SESSION_MS <= session_timeout_ms <= MAX_SESSION_MS:
            raise ValueError(f"session_timeout_ms must be in {MIN_SESSION_MS}..{MAX_SESSION_MS}")
        if assignor is not None and assignor not in ASSIGNORS:
            raise ValueError(f"assignor must be one of {sorted(ASSIGNORS)}")
        self.tick(now, counts)
        if assignor is not None and assignor != self.assignor:
            if self.members:
                raise AssignorMismatch(f"group {self.name!r} uses the {self.assignor!r} "
                                       f"assignor, not {assignor!r}")
            self.assignor = assignor
        wanted = tuple(sorted(set(topics)))
        known = self.members.get(member_id)
        if known is not None and known.secret_sha256 is not None:
            if not known.proves(secret):
                raise MemberInUse(f"member id {member_id!r} of group {self.name!r} belongs "
                                  "to a live member (member_secret missing or wrong): wait "
                                  "for its session to expire, or use another member id")
            digest: str | None = known.secret_sha256  # a rejoin keeps its secret
        else:
            digest = secret_digest(new_secret) if new_secret is not None else None
        self.members[member_id] = Member(member_id, wanted, session_timeout_ms, now, digest)
        if (self.state is GroupState.STABLE and known is not None and known.topics == wanted
                and not self._counts_changed(counts)):
            return True
        if self.state is not GroupState.REBALANCING:
            self._begin(now)
        self.pending.add(member_id)
        if set(self.members) <= self.pending:
            self._complete(counts)
        return self.ready(member_id)

    def heartbeat(self, member_id: str, generation: int, counts: Mapping[str, int],
                  now: float, secret: str | None = None) -> None:
        self.tick(now, counts)
        member = self._member(member_id, secret)
        member.last_seen = now
        if self.state is GroupState.STABLE and self._counts_changed(counts):
            self._begin(now)
        if self.state is GroupState.REBALANCING:
            raise RebalanceInProgress(f"group {self.name!r} is rebalancing: commit what you "
                                      "processed, stop reading and join again")
        self._check_generation(generation)

    def leave(self, member_id: str, counts: Mapping[str, int], now: float,
              secret: str | None = None) -> None:
        self._member(member_id, secret)
        del self.members[member_id]
        self.pending.discard(member_id)
        self._membership_changed(now, counts)

    def tick(self, now: float, counts: Mapping[str, int]) -> bool:
        """Expire sessions and end a rebalance whose deadline passed; True if anything
        changed. Members waiting in a join (pending) do not expire meanwhile."""
        before = (self.generation, self.state, len(self.members))
        gone = [m.member_id for m in self.members.values() if m.member_id not in self.pending
                and (now - m.last_seen) * 1000 > m.session_timeout_ms]
        for m in gone:
            del self.members[m]
        if gone:
            self._membership_changed(now, counts)
        if self.state is GroupState.REBALANCING and now >= self.deadline:
            self._complete(counts)
        return before != (self.generation, self.state, len(self.members))

    def check_commit(self, member_id: str | None, generation: int | None,
                     partitions: Iterable[TopicPartition], now: float,
                     secret: str | None = None) -> None:
        """Raise unless this commit may be stored (see the table above)."""
        if member_id is None:
            if self.members:
                raise GroupActive(f"group {self.name!r} has members: commit as a member, "
                                  "with its member_id and generation")
            return
        member = self._member(member_id, secret)
        if member_id not in self.pending and (
                (now - member.last_seen) * 1000 > member.session_timeout_ms):
            raise UnknownMember(f"the session of {member_id!r} expired: join again")
        self._check_generation(generation)
        owned = set(self.assignment.get(member_id, ()))
        foreign = sorted(tp for tp in partitions if tp not in owned)
        if foreign:
            raise NotAssigned(f"partitions {[f'{t}/{p}' for t, p in foreign]} are not "
                              f"assigned to {member_id!r} in generation {self.generation}")
        member.last_seen = now  # a commit is as good as a heartbeat

    def secret_of(self, member_id: str, secret: str | None, new_secret: str) -> str:
        """After ``join``: the secret the member now holds (its own or the new one)."""
        m = self.members[member_id]
        return secret if secret and m.secret_sha256 == secret_digest(secret) else new_secret

    def _member(self, member_id: str, secret: str | None) -> Member:
        member = self.members.get(member_id)
        if member is None:
            raise UnknownMember(f"{member_id!r} is not a member of group {self.name!r} (its "
                                "session may have expired): join again")
        if not member.proves(secret):
            raise UnknownMember(f"member_secret does not match member {member_id!r} of group "
                                f"{self.name!r} (another instance holds that id, or it "
                                "expired): join again")
        return member

    def _check_generation(self, generation: int | None) -> None:
        if generation != self.generation:
            raise StaleGeneration(f"generation {generation} is stale: group {self.name!r} "
                                  f"is at generation {self.generation}; join again")

    # -- persistence form (group_store) ------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Membership and assignment as plain data (offsets are stored separately)."""
        return {"name": self.name, "assignor": self.assignor, "generation": self.generation,
                "members": [{"member_id": m.member_id, "topics": list(m.topics),
                             "session_timeout_ms": m.session_timeout_ms,
                             "secret_sha256": m.secret_sha256}
                            for m in self.members.values()],
                "assignment": {m: [list(tp) for tp in tps] for m, tps in self.assignment.items()},
                "counts": self.counts, "state": self.state.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], now: float) -> Group:
        """Restore a group; sessions restart at ``now`` (the members get a full timeout)
        and a rebalance that was under way starts over."""
        members = {m["member_id"]: Member(m["member_id"], tuple(m["topics"]),
                                          int(m["session_timeout_ms"]), now,
                                          m.get("secret_sha256"))
                   for m in d.get("members", [])}
        assignment = {m: [(t, int(p)) for t, p in tps]
                      for m, tps in d.get("assignment", {}).items()}
        g = cls(d["name"], d.get("assignor", "range"), int(d.get("generation", 0)),
                members, assignment, dict(d.get("counts", {})))
        g.state = GroupState(d.get("state", "stable" if members else "empty"))
        if g.state is GroupState.REBALANCING:
            g._begin(now)  # everyone joins again
        return g
