"""The broker's group coordinator: pure ``Group`` objects, a clock, and SQLite behind them.

Strategy: all decisions are made by ``state.Group`` on the event loop; this class only
supplies the time and the partition counts, persists every change through ``GroupStore``
on one database thread (so writes keep their order and never stall the loop), and waits
for the write before answering, so an acknowledged join or commit is on disk. A join
that has to wait for the other members (the rebalance barrier) long-polls on an event
set when the group's rebalance completes, for at most ``MAX_JOIN_WAIT_S``; then it
answers 409 ``rebalance_in_progress`` and the client joins again. A sweep task ticks
every group, so sessions expire and rebalance deadlines pass even in a quiet group.
Memory is the source of truth while running; the database is read once at start.
Each new member gets a random ``member_secret`` with its join answer (only its digest is
stored); heartbeat, commit and leave must send it back (``state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..storage import PartitionStoreAPI, UnknownTopic
from .kafka_group import KafkaGroups
from .state import (
    AssignorMismatch,
    Group,
    GroupActive,
    GroupState,
    RebalanceInProgress,
    TopicPartition,
    UnknownMember,
)
from .store import GroupStore

log = logging.getLogger(__name__)
MAX_JOIN_WAIT_S = 25.0


class UnknownGroup(LookupError):
    """No group of that name has members or committed offsets."""


class GroupCoordinator:
    def __init__(self, store: PartitionStoreAPI, db_path: Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.db = GroupStore(db_path)
        self.groups: dict[str, Group] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="groups-db")
        self._rebalanced: dict[str, asyncio.Event] = {}  # set when a rebalance completes
        #: groups of Kafka clients (client-side assignment); their offsets live here too
        self.kafka = KafkaGroups(clock)
        groups, offsets = self.db.load()
        now = clock()
        for d in groups:
            self.groups[d["name"]] = Group.from_dict(d, now)
        for r in offsets:
            self._group(r["group_name"]).offsets[(r["topic"], r["partition"])] = r["offset"]

    # -- helpers -------------------------------------------------------------------------

    def _group(self, name: str) -> Group:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = Group(name)
        return g

    def _existing(self, name: str, member_id: str) -> Group:
        """The group, without creating one for a request that names a member of nothing."""
        g = self.groups.get(name)
        if g is None:
            raise UnknownMember(f"{member_id!r} is not a member of group {name!r} (no such "
                                "group): join first")
        return g

    def counts(self) -> dict[str, int]:
        return {t: len(self.store.partitions(t)) for t in self.store.topics()}

    async def _db(self, fn: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _save(self, g: Group) -> None:
        await self._db(self.db.save_group, g.to_dict())

    async def _after(self, g: Group, before: tuple[int, GroupState, int]) -> None:
        """Persist a changed group and wake the joins waiting for its rebalance."""
        if before == (g.generation, g.state, len(g.members)):
            return
        if g.state is not GroupState.REBALANCING:
            ev = self._rebalanced.pop(g.name, None)
            if ev is not None:
                ev.set()
        log.info("group %s: %s, generation %d, %d members", g.name, g.state.value,
                 g.generation, len(g.members))
        await self._save(g)

    @staticmethod
    def _snapshot(g: Group) -> tuple[int, GroupState, int]:
        return g.generation, g.state, len(g.members)

    @staticmethod
    def member_view(g: Group, member_id: str) -> dict[str, Any]:
        m = g.members[member_id]
        return {"group": g.name, "member_id": member_id, "generation": g.generation,
                "assignor": g.assignor,
                "assignment": [{"topic": t, "partition": p}
                               for t, p in g.assignment.get(member_id, [])],
                "members": len(g.members), "session_timeout_ms": m.session_timeout_ms,
                "heartbeat_interval_ms": max(1, m.session_timeout_ms // 3)}

    # -- operations (GroupError and ValueError propagate to the HTTP layer) --------------

    async def join(self, name: str, member_id: str, topics: list[str],
                   session_timeout_ms: int, assignor: str | None,
                   secret: str | None = None) -> dict[str, Any]:
        counts = self.counts()
        for t in topics:
            if t not in counts:
                raise UnknownTopic(f"unknown topic {t!r}")
        if self.kafka.active(name):
            raise AssignorMismatch(f"group {name!r} has Kafka-protocol members: use "
                                   "another group name")
        g = self._group(name)
        before = self._snapshot(g)
        new_secret = secrets.token_urlsafe(24)
        try:
            ready = g.join(member_id, topics, session_timeout_ms, assignor, counts,
                           self.clock(), secret, new_secret)
            held = g.secret_of(member_id, secret, new_secret)
        finally:
            await self._after(g, before)
        if not ready:
            ev = self._rebalanced.setdefault(name, asyncio.Event())
            wait = min(MAX_JOIN_WAIT_S, max(0.0, g.deadline - self.clock()) + 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel
                    await ev.wait()
            if member_id not in g.members:
                raise UnknownMember(f"{member_id!r} was dropped from group {name!r} while "
                                    "it rebalanced: join again")
            if not g.ready(member_id):
                waiting = sorted(set(g.members) - g.pending)
                exc = RebalanceInProgress(f"group {name!r} still waits for {waiting} to "
                                          "join again: join again")
                exc.member_secret = held  # a first join's secret is not lost with it
                raise exc
        return {**self.member_view(g, member_id), "member_secret": held}

    async def heartbeat(self, name: str, member_id: str, generation: int,
                        secret: str | None = None) -> dict[str, Any]:
        g = self._existing(name, member_id)
        before = self._snapshot(g)
        try:
            g.heartbeat(member_id, generation, self.counts(), self.clock(), secret)
        finally:
            await self._after(g, before)
        return {"group": name, "member_id": member_id, "generation": g.generation}

    async def leave(self, name: str, member_id: str,
                    secret: str | None = None) -> dict[str, Any]:
        g = self._existing(name, member_id)
        before = self._snapshot(g)
        try:
            g.leave(member_id, self.counts(), self.clock(), secret)
        finally:
            await self._after(g, before)
        return {"group": name, "generation": g.generation}

    async def commit(self, name: str, member_id: str | None, generation: int | None,
                     offsets: list[tuple[str, int, int]],
                     secret: str | None = None) -> dict[str, Any]:
        for t, p, o in offsets:
            part = self.store.partition(t, p)  # UnknownTopic for a bad topic/partition
            if o > part.end_offset:
                raise ValueError(f"offset {o} for {t}/{p} is beyond its end "
                                 f"{part.end_offset}")
        if member_id is None and self.kafka.active(name):
            raise GroupActive(f"group {name!r} has Kafka-protocol members")
        g = self._group(name) if member_id is None else self._existing(name, member_id)
        g.check_commit(member_id, generation, [(t, p) for t, p, _ in offsets], self.clock(),
                       secret)
        await self._db(self.db.commit, name, g.generation, member_id, offsets)
        for t, p, o in offsets:
            g.offsets[(t, p)] = o
        return {"group": name, "generation": g.generation, "committed": len(offsets)}

    async def commit_checked(self, name: str, offsets: list[tuple[str, int, int]]) -> None:
        """Store offsets the caller has already checked (a Kafka member of the current
        generation, ``KafkaGroups.check_generation``); refused while HTTP members hold the
        group. Durable before it returns, like ``commit``."""
        g = self._group(name)
        if g.members:
            raise GroupActive(f"group {name!r} has HTTP members")
        await self._db(self.db.commit, name, g.generation, None, offsets)
        for t, p, o in offsets:
            g.offsets[(t, p)] = o

    def committed(self, name: str, topic: str | None = None) -> list[dict[str, Any]]:
        g = self.groups.get(name)
        items = sorted(g.offsets.items()) if g is not None else []
        return [{"topic": t, "partition": p, "offset": o}
                for (t, p), o in items if topic is None or t == topic]

    def describe(self, name: str) -> dict[str, Any]:
        g = self.groups.get(name)
        if g is None:
            raise UnknownGroup(f"unknown group {name!r}")
        members = [{"member_id": m.member_id, "topics": list(m.topics),
                    "session_timeout_ms": m.session_timeout_ms,
                    "assignment": [{"topic": t, "partition": p}
                                   for t, p in g.assignment.get(m.member_id, [])]}
                   for m in g.members.values()]
        offsets = [{"topic": t, "partition": p, "offset": o, "end_offset": end,
                    "lag": max(0, end - o)} for (t, p), o, end in self._ends(g)]
        return {"group": name, "state": g.state.value, "generation": g.generation,
                "assignor": g.assignor, "members": members, "offsets": offsets,
                "waiting_for": sorted(set(g.members) - g.pending)
                if g.state is GroupState.REBALANCING else []}

    def list(self) -> list[dict[str, Any]]:
        return [{"group": g.name, "state": g.state.value, "generation": g.generation,
                 "members": len(g.members)} for g in sorted(self.groups.values(),
                                                            key=lambda g: g.name)]

    def _ends(self, g: Group) -> Iterator[tuple[TopicPartition, int, int]]:
        for (t, p), o in sorted(g.offsets.items()):
            try:
                end = self.store.partition(t, p).durable_offset
            except UnknownTopic:
                continue
            yield (t, p), o, end

    def lag(self) -> Iterable[tuple[str, TopicPartition, int, int]]:
        """(group, (topic, partition), committed, end) for every committed offset."""
        for g in list(self.groups.values()):
            for tp, o, end in self._ends(g):
                yield g.name, tp, o, end

    # -- background ----------------------------------------------------------------------

    async def tick_all(self) -> None:
        self.kafka.tick()
        counts, now = self.counts(), self.clock()
        for g in list(self.groups.values()):
            before = self._snapshot(g)
            g.tick(now, counts)
            await self._after(g, before)

    async def run_expiry(self, interval_s: float = 0.25) -> None:
        """Background task: expire sessions and end overdue rebalances (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.tick_all()
            except Exception as exc:  # a bad disk must not end the sweep for good
                log.warning("group expiry failed: %s", exc)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()
