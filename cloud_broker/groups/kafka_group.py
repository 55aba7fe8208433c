"""Groups whose members are Kafka clients: Kafka's group protocol with client-side assignment.

Strategy: Kafka's eager protocol as its clients expect it. A join (new member, changed
metadata, or any join of a stable group) starts a rebalance; every known member must join
again within the rebalance timeout (members that do not are dropped); then the
generation goes up, the first member becomes the leader and alone receives every
member's subscription metadata, and its SyncGroup hands out the assignment (range,
roundrobin, whatever the clients chose: the broker never reads it). Heartbeats answer
``REBALANCE_IN_PROGRESS`` while a rebalance runs, and a session that passes without one
drops the member. Committed offsets are not kept here: they are the ``GroupCoordinator``'s,
the same rows HTTP consumers commit, checked against this group's generation first, so a
zombie of an older generation cannot move them. A group name is used by HTTP members or by
Kafka members at one time, never both.

Kafka error codes (the ones this module answers)::

    UNKNOWN_MEMBER_ID 25, ILLEGAL_GENERATION 22, REBALANCE_IN_PROGRESS 27,
    INCONSISTENT_GROUP_PROTOCOL 23, INVALID_SESSION_TIMEOUT 26
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .state import MAX_SESSION_MS, MIN_SESSION_MS

log = logging.getLogger(__name__)

UNKNOWN_MEMBER_ID = 25
ILLEGAL_GENERATION = 22
REBALANCE_IN_PROGRESS = 27
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_SESSION_TIMEOUT = 26
GROUP_MAX_SIZE_REACHED = 81
MAX_MEMBERS = 1000  # per group: a join beyond it is refused (bounded memory)


class KafkaGroupError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class KafkaMember:
    member_id: str
    client_id: str
    session_ms: int
    rebalance_ms: int
    protocols: list[tuple[str, bytes]]
    last_seen: float
    joined: asyncio.Future[dict] | None = None
    synced: asyncio.Future[bytes] | None = None
    assignment: bytes = b""


@dataclass
class KafkaGroup:
    name: str
    protocol_type: str = "consumer"
    generation: int = 0
    leader: str = ""
    protocol: str = ""
    members: dict[str, KafkaMember] = field(default_factory=dict)
    rebalancing: bool = False
    awaiting_sync: bool = False
    deadline: float = 0.0


class KafkaGroups:
    """Every Kafka-protocol group of the broker (one event loop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.groups: dict[str, KafkaGroup] = {}

    def active(self, name: str) -> bool:
        g = self.groups.get(name)
        return g is not None and bool(g.members)

    def check_generation(self, name: str, member_id: str, generation: int) -> None:
        """For a commit: -1/"" (no membership) only when the group has no members."""
        g = self.groups.get(name)
        if generation < 0 and not member_id:
            if g is not None and g.members:
                raise KafkaGroupError(UNKNOWN_MEMBER_ID, "the group has members")
            return
        if g is None or member_id not in g.members:
            raise KafkaGroupError(UNKNOWN_MEMBER_ID, f"{member_id!r} is not a member")
        if generation != g.generation:
            raise KafkaGroupError(ILLEGAL_GENERATION, f"generation {generation} is not "
                                                      f"{g.generation}")
        g.members[member_id].last_seen = self.clock()

    async def join(self, name: str, member_id: str, client_id: str, session_ms: int,
                   rebalance_ms: int, protocol_type: str,
                   protocols: list[tuple[str, bytes]]) -> dict:
        if not MIN_SESSION_MS <= session_ms <= MAX_SESSION_MS:
            raise KafkaGroupError(INVALID_SESSION_TIMEOUT, "session timeout out of range")
        if not protocols:  # a first member without one would leave no protocol to choose
            raise KafkaGroupError(INCONSISTENT_GROUP_PROTOCOL, "no protocols")
        # the client's rebalance timeout holds the group in a rebalance that long: bounded
        rebalance_ms = min(max(rebalance_ms, session_ms), MAX_SESSION_MS)
        g = self.groups.setdefault(name, KafkaGroup(name))
        if g.members and (protocol_type != g.protocol_type or not self._common(
                g, protocols)):
            raise KafkaGroupError(INCONSISTENT_GROUP_PROTOCOL, "no common protocol")
        if member_id and member_id not in g.members:
            raise KafkaGroupError(UNKNOWN_MEMBER_ID, f"{member_id!r} is not a member")
        if not member_id:
            if len(g.members) >= MAX_MEMBERS:
                raise KafkaGroupError(GROUP_MAX_SIZE_REACHED, "group is full")
            member_id = f"{client_id[:64]}-{secrets.token_hex(8)}"
        now = self.clock()
        m = g.members.get(member_id)
        if m is None:
            m = g.members[member_id] = KafkaMember(member_id, client_id, session_ms,
                                                   rebalance_ms, protocols, now)
        m.protocols, m.session_ms, m.last_seen = protocols, session_ms, now
        m.rebalance_ms = rebalance_ms
        g.protocol_type = protocol_type
        if m.joined is not None and not m.joined.done():
            m.joined.cancel()
        m.joined = asyncio.get_running_loop().create_future()
        if not g.rebalancing:
            self._begin(g, now)
        log.debug("kafka group %s: %s joins", name, member_id)
        self._maybe_complete(g)
        try:
            return await asyncio.shield(m.joined)
        except asyncio.CancelledError:
            if m.joined.cancelled():
                raise KafkaGroupError(REBALANCE_IN_PROGRESS, "joined again") from None
            raise

    async def sync(self, name: str, member_id: str, generation: int,
                   assignments: dict[str, bytes]) -> bytes:
        g = self._member_group(name, member_id)
        if g.rebalancing:
            raise KafkaGroupError(REBALANCE_IN_PROGRESS, "the group is rebalancing")
        if generation != g.generation:
            raise KafkaGroupError(ILLEGAL_GENERATION, "stale generation")
        m = g.members[member_id]
        m.last_seen = self.clock()
        if member_id == g.leader and g.awaiting_sync:
            g.awaiting_sync = False
            for mid, other in g.members.items():
                other.assignment = assignments.get(mid, b"")
                if other.synced is not None and not other.synced.done():
                    other.synced.set_result(other.assignment)
        if not g.awaiting_sync:
            return m.assignment
        m.synced = asyncio.get_running_loop().create_future()
        fut = m.synced
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(m.session_ms / 1000):
                return await asyncio.shield(fut)
        raise KafkaGroupError(REBALANCE_IN_PROGRESS, "the leader did not assign in time")

    def heartbeat(self, name: str, member_id: str, generation: int) -> None:
        g = self._member_group(name, member_id)
        g.members[member_id].last_seen = self.clock()
        if g.rebalancing:
            raise KafkaGroupError(REBALANCE_IN_PROGRESS, "the group is rebalancing")
        if generation != g.generation:
            raise KafkaGroupError(ILLEGAL_GENERATION, "stale generation")

    def leave(self, name: str, member_id: str) -> None:
        g = self._member_group(name, member_id)
        self._drop(g, member_id)

    def _member_group(self, name: str, member_id: str) -> KafkaGroup:
        g = self.groups.get(name)
        if g is None or member_id not in g.members:
            raise KafkaGroupError(UNKNOWN_MEMBER_ID, f"{member_id!r} is not a member")
        return g

    @staticmethod
    def _common(g: KafkaGroup, protocols: list[tuple[str, bytes]]) -> list[str]:
        names = [p for p, _ in protocols]
        return [p for p in names
                if all(p in {q for q, _ in m.protocols} for m in g.members.values())]

    def _begin(self, g: KafkaGroup, now: float) -> None:
        g.rebalancing, g.awaiting_sync = True, False
        g.deadline = now + max(m.rebalance_ms for m in g.members.values()) / 1000
        for m in g.members.values():
            if m.synced is not None and not m.synced.done():
                m.synced.cancel()

    def _drop(self, g: KafkaGroup, member_id: str) -> None:
        log.info("kafka group %s: %s left or expired", g.name, member_id)
        m = g.members.pop(member_id)
        for fut in (m.joined, m.synced):
            if fut is not None and not fut.done():
                fut.cancel()
        if not g.members:
            g.rebalancing = g.awaiting_sync = False
            g.leader = ""
            return
        if not g.rebalancing:
            self._begin(g, self.clock())
        self._maybe_complete(g)

    def _maybe_complete(self, g: KafkaGroup, force: bool = False) -> None:
        waiting = [m for m in g.members.values() if m.joined is None or m.joined.done()]
        if waiting and not force:
            return
        for m in waiting:
            del g.members[m.member_id]
        if not g.members:
            g.rebalancing = False
            return
        g.generation += 1
        g.rebalancing, g.awaiting_sync = False, True
        log.info("kafka group %s: generation %d, %d members", g.name, g.generation,
                 len(g.members))
        first = next(iter(g.members.values()))
        g.protocol = self._common(g, first.protocols)[0]
        if g.leader not in g.members:
            g.leader = first.member_id
        meta = [{"member_id": m.member_id, "metadata": dict(m.protocols)[g.protocol]}
                for m in g.members.values()]
        for m in g.members.values():
            assert m.joined is not None
            m.joined.set_result({"generation_id": g.generation, "protocol_name": g.protocol,
                                 "leader": g.leader, "member_id": m.member_id,
                                 "members": meta if m.member_id == g.leader else []})

    def tick(self) -> None:
        """Expire sessions, end overdue rebalances (called by the coordinator's sweep)."""
        now = self.clock()
        for g in list(self.groups.values()):
            for m in list(g.members.values()):
                if now - m.last_seen > m.session_ms / 1000 and (
                        m.joined is None or m.joined.done()):
                    self._drop(g, m.member_id)
            if g.rebalancing and g.members and now >= g.deadline:
                self._maybe_complete(g, force=True)
            if not g.members:
                self.groups.pop(g.name, None)


__all__ = ["KafkaGroupError", "KafkaGroups"]
