"""The broker's group coordinator: pure ``Group`` objects, a clock, and a backend.

Strategy: all decisions are made by ``state.Group`` on the event loop; this class only
supplies the time and the partition counts. Every operation is a compare-and-set cycle on
the group's record in a ``GroupBackend`` (``backend``): read it with its revision, let
``Group`` decide, store the result only if the revision did not move (else read again
and re-decide, ``CAS_ATTEMPTS`` times), and answer only once it is stored, so an
acknowledged join or commit is durable. The backend is SQLite for one broker process, or
a JetStream KV bucket shared by every node of a cluster (``kv_backend``): then any node
serves any member, and generations fence zombies across nodes because the check and the
write are one CAS. ``groups`` is a read-only view (describe, list, lag, the Kafka
listener) kept fresh by every stored change, the other nodes' included.

A join that has to wait for the other members (the rebalance barrier) long-polls, woken
when a rebalance completes here or on another node and re-reading the record at least
every ``JOIN_POLL_S``, for at most ``MAX_JOIN_WAIT_S``; then it answers 409
``rebalance_in_progress`` and the client joins again. A sweep task ticks every group, so
sessions expire and rebalance deadlines pass even in a quiet group. A member's commit
never moves an offset backwards (a late retry of an older commit, from any node, leaves
the newer one); a commit without membership (an empty group: an operator's reset) may.
Each new member gets a random ``member_secret`` with its join answer (only its digest is
stored); heartbeat, commit and leave must send it back (``state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..storage import PartitionStoreAPI, UnknownTopic
from .backend import (
    GroupBackend,
    GroupConflict,
    LocalGroupBackend,
    Versioned,
    durable_form,
    from_live,
    live_form,
)
from .kafka_group import KafkaGroups
from .state import (
    AssignorMismatch,
    Group,
    GroupActive,
    GroupError,
    GroupState,
    RebalanceInProgress,
    TopicPartition,
    UnknownMember,
)
from .store import GroupStoreError

log = logging.getLogger(__name__)
MAX_JOIN_WAIT_S = 25.0
JOIN_POLL_S = 0.25
CAS_ATTEMPTS = 50
T = TypeVar("T")


class UnknownGroup(LookupError):
    """No group of that name has members or committed offsets."""


class GroupCoordinator:
    """``backend``: a ``GroupBackend``, or the path of the SQLite file of a local one.
    ``clock`` defaults to wall-clock time for a shared backend (every node must agree on
    session deadlines) and to the monotonic clock otherwise."""

    def __init__(self, store: PartitionStoreAPI, backend: GroupBackend | Path,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        if isinstance(backend, Path):
            backend = LocalGroupBackend(backend, (clock or time.monotonic)())
        self.backend = backend
        self.clock = clock or (time.time if backend.shared else time.monotonic)
        self.groups: dict[str, Group] = {}  # read-only view: see the module docstring
        self._revisions: dict[str, int] = {}
        self._rebalanced: dict[str, asyncio.Event] = {}  # set when a rebalance completes
        #: groups of Kafka clients (client-side assignment): membership on this node only;
        #: their offsets live in the backend like every group's
        self.kafka = KafkaGroups(self.clock)
        for name, v in backend.snapshot().items():
            self._install(name, v)
        backend.on_change = self._install

    # -- helpers -------------------------------------------------------------------------

    def _install(self, name: str, v: Versioned | None) -> None:
        """Make ``v`` the view of group ``name`` (unless the view is newer) and wake the
        joins waiting for its rebalance once it is over."""
        if v is None:
            self.groups.pop(name, None)
            self._revisions.pop(name, None)
            return
        if self._revisions.get(name, -1) >= v.revision:
            return
        g = from_live(v.record)
        self.groups[name], self._revisions[name] = g, v.revision
        if g.state is not GroupState.REBALANCING:
            ev = self._rebalanced.pop(name, None)
            if ev is not None:
                ev.set()

    async def _mutate(self, name: str, decide: Callable[[Group], T], *,
                      create: bool = True, commits: list[tuple[str, int, int]] | None = None,
                      member_id: str | None = None) -> tuple[Group, T]:
        """One compare-and-set cycle: read, ``decide`` (it may raise GroupError or
        ValueError, after which what it changed is stored anyway, e.g. an expired
        session), store if anything changed, retry on a conflict. ``commits`` is filled by
        ``decide`` with the offset rows it stored."""
        for attempt in range(CAS_ATTEMPTS):
            cur = await self.backend.get(name)
            if cur is None and not create:
                raise UnknownMember(f"{member_id!r} is not a member of group {name!r} (no "
                                    "such group): join first")
            g = from_live(cur.record) if cur is not None else Group(name)
            before = live_form(g)
            error: Exception | None = None
            result: Any = None
            try:
                result = decide(g)
            except (GroupError, ValueError) as exc:
                error = exc
            after = live_form(g)
            if after != before:
                revision = cur.revision if cur is not None else 0
                try:
                    new = await self.backend.put(
                        after, revision, membership=durable_form(before) != durable_form(after),
                        commits=commits or (), member_id=member_id)
                except GroupConflict:
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                self._log_change(before, g)
                self._install(name, Versioned(after, new))
            if error is not None:
                raise error
            return g, result
        raise GroupStoreError(f"group {name!r} changed {CAS_ATTEMPTS} times while this "
                              "request was decided: retry")

    @staticmethod
    def _log_change(before: dict[str, Any], g: Group) -> None:
        if (before["generation"], before["state"], len(before["members"])) != (
                g.generation, g.state.value, len(g.members)):
            log.info("group %s: %s, generation %d, %d members", g.name, g.state.value,
                     g.generation, len(g.members))

    def counts(self) -> dict[str, int]:
        return {t: len(self.store.partitions(t)) for t in self.store.topics()}

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
        new_secret = secrets.token_urlsafe(24)

        def decide(g: Group) -> tuple[bool, str]:
            ready = g.join(member_id, topics, session_timeout_ms, assignor, counts,
                           self.clock(), secret, new_secret)
            return ready, g.secret_of(member_id, secret, new_secret)

        g, (ready, held) = await self._mutate(name, decide)
        if not ready:
            try:
                g = await self._await_rebalance(name, member_id, g.deadline)
            except RebalanceInProgress as exc:
                exc.member_secret = held  # a first join's secret is not lost with it
                raise
        return {**self.member_view(g, member_id), "member_secret": held}

    async def _await_rebalance(self, name: str, member_id: str, deadline: float) -> Group:
        """Wait until ``member_id`` has its share of the new generation (completed here
        or on another node), the member was dropped, or the wait is over."""
        give_up = time.monotonic() + min(MAX_JOIN_WAIT_S,
                                         max(0.0, deadline - self.clock()) + 1.0)
        while True:
            ev = self._rebalanced.setdefault(name, asyncio.Event())
            cur = await self.backend.get(name)
            g = from_live(cur.record) if cur is not None else Group(name)
            if member_id not in g.members:
                raise UnknownMember(f"{member_id!r} was dropped from group {name!r} while "
                                    "it rebalanced: join again")
            if g.ready(member_id):
                return g
            left = give_up - time.monotonic()
            if left <= 0:
                waiting = sorted(set(g.members) - g.pending)
                raise RebalanceInProgress(f"group {name!r} still waits for {waiting} to "
                                          "join again: join again")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, JOIN_POLL_S)):  # not wait_for: it
                    await ev.wait()  # can swallow a cancel

    async def heartbeat(self, name: str, member_id: str, generation: int,
                        secret: str | None = None) -> dict[str, Any]:
        counts = self.counts()
        g, _ = await self._mutate(
            name, lambda g: g.heartbeat(member_id, generation, counts, self.clock(), secret),
            create=False, member_id=member_id)
        return {"group": name, "member_id": member_id, "generation": g.generation}

    async def leave(self, name: str, member_id: str,
                    secret: str | None = None) -> dict[str, Any]:
        counts = self.counts()
        g, _ = await self._mutate(
            name, lambda g: g.leave(member_id, counts, self.clock(), secret),
            create=False, member_id=member_id)
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
        rows: list[tuple[str, int, int]] = []

        def decide(g: Group) -> None:
            g.check_commit(member_id, generation, [(t, p) for t, p, _ in offsets],
                           self.clock(), secret)
            # a member's commit never moves an offset back (a late retry of an older one)
            rows[:] = [(t, p, o if member_id is None else max(o, g.offsets.get((t, p), o)))
                       for t, p, o in offsets]
            for t, p, o in rows:
                g.offsets[(t, p)] = o

        g, _ = await self._mutate(name, decide, create=member_id is None, commits=rows,
                                  member_id=member_id)
        return {"group": name, "generation": g.generation, "committed": len(offsets)}

    async def commit_checked(self, name: str, offsets: list[tuple[str, int, int]]) -> None:
        """Store offsets the caller has already checked (a Kafka member of the current
        generation, ``KafkaGroups.check_generation``); refused while HTTP members hold the
        group. Durable before it returns, like ``commit``."""
        rows = list(offsets)

        def decide(g: Group) -> None:
            if g.members:
                raise GroupActive(f"group {name!r} has HTTP members")
            for t, p, o in rows:
                g.offsets[(t, p)] = o

        await self._mutate(name, decide, commits=rows)

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
        """Expire sessions and end overdue rebalances. Only groups whose view says the
        tick would change something are read and changed (with CAS: on a cluster every
        node sweeps, and the first one to store wins)."""
        self.kafka.tick()
        counts, now = self.counts(), self.clock()
        for name, view in list(self.groups.items()):
            if not from_live(live_form(view)).tick(now, counts):
                continue
            with contextlib.suppress(UnknownMember):  # deleted meanwhile
                await self._mutate(name, lambda g: g.tick(self.clock(), counts),
                                   create=False)

    async def run_expiry(self, interval_s: float = 0.25) -> None:
        """Background task: expire sessions and end overdue rebalances (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.tick_all()
            except Exception as exc:  # a bad disk must not end the sweep for good
                log.warning("group expiry failed: %s", exc)

    def close(self) -> None:
        self.backend.close()
