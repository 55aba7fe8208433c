"""One consumer's membership in a group: join through the barrier, heartbeats, commits.

Strategy: ``Membership`` speaks the group protocol (docs/consumers.md) and nothing else;
``client.Consumer`` decides when to read, commit and rejoin. The heartbeat task calls
``on_rebalance`` when the broker says the group is rebalancing or has forgotten us.
``fence`` is a self-imposed deadline (90% of the session after the last answer the
broker gave us as a member): past it the broker may already have handed our partitions to
someone else, so the consumer stops handing out records and joins again, even when its
event loop was too busy for the heartbeat task to find out. The ``member_secret`` of the
first join answer proves the member in every later call (and in a rejoin); a member id
still held by a live member (``member_in_use``: another process, or our own from before
a restart) is retried until that session expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .transport import BrokerClient, BrokerUnavailable, ConsumerError, RebalanceError

log = logging.getLogger(__name__)
TopicPartition = tuple[str, int]


class Membership:
    def __init__(self, client: BrokerClient, group: str, member_id: str, topics: list[str],
                 session_timeout_ms: int, assignor: str | None,
                 on_rebalance: Callable[[], None]) -> None:
        self.client, self.group, self.member_id = client, group, member_id
        self.topics, self.session_timeout_ms, self.assignor = topics, session_timeout_ms, assignor
        self.on_rebalance = on_rebalance
        self.generation: int | None = None
        self.secret: str | None = None  # from the join answer
        self.assignment: list[TopicPartition] = []
        self.fence = 0.0  # time.monotonic() after which we may no longer be a member
        self._joining = False
        self._heartbeat: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        return time.monotonic() < self.fence

    def _renew(self, since: float) -> None:
        self.fence = since + 0.9 * self.session_timeout_ms / 1000

    async def join(self) -> dict[TopicPartition, int]:
        """Join (waiting out rebalances) and return the committed offsets of our share."""
        self._joining = True
        try:
            while True:
                sent = time.monotonic()
                try:
                    view = await self.client.join(self.group, self.member_id, self.topics,
                                                  self.session_timeout_ms, self.assignor,
                                                  self.secret)
                    break
                except RebalanceError as exc:  # the barrier timed out: still waiting
                    log.info("join %s: %s", self.group, exc)
                    code = exc.body.get("code")
                    held = exc.body.get("member_secret")
                    if isinstance(held, str) and held:
                        self.secret = held  # our first join timed out: join again as us
                    if code == "unknown_member":
                        self.secret = None  # it expired: join as a new member
                    elif code == "member_in_use":  # wait for that session to expire
                        await asyncio.sleep(min(1.0, self.session_timeout_ms / 4000))
            self._renew(sent)
            self.secret = view.get("member_secret") or self.secret
            self.generation = view["generation"]
            self.assignment = [(a["topic"], a["partition"]) for a in view["assignment"]]
            committed = await self.client.committed(self.group)
        finally:
            self._joining = False
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(
                self._beat(view["heartbeat_interval_ms"] / 1000))
        log.info("member %s of %s: generation %s, partitions %s", self.member_id, self.group,
                 self.generation, self.assignment)
        return {tp: committed[tp] for tp in self.assignment if tp in committed}

    async def commit(self, offsets: list[tuple[str, int, int]]) -> bool:
        """False when refused because the group moved on (the caller rejoins)."""
        sent = time.monotonic()
        try:
            await self.client.commit(self.group, self.member_id, self.generation, offsets,
                                     self.secret)
        except ConsumerError as exc:
            if exc.status != 409:
                raise
            log.info("commit refused: %s", exc)
            self.on_rebalance()
            return False
        self._renew(sent)  # a commit is as good as a heartbeat
        return True

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._joining or self.generation is None:
                continue
            sent = time.monotonic()
            try:
                await self.client.heartbeat(self.group, self.member_id, self.generation,
                                            self.secret or "")
                self._renew(sent)
            except (RebalanceError, BrokerUnavailable) as exc:
                log.info("heartbeat %s: %s", self.group, exc)
                self.on_rebalance()
            except ConsumerError as exc:
                # A refusal that is not a rebalance (403 after a token change, a 5xx): the
                # fence still runs out on its own, so keep beating instead of ending silently.
                log.warning("heartbeat %s refused: %s", self.group, exc)
            except Exception:  # a bug must not end the heartbeats (the fence would expire)
                log.exception("heartbeat %s failed", self.group)

    async def leave(self) -> None:
        await self.stop()
        if self.generation is not None and self.secret is not None:
            with contextlib.suppress(ConsumerError):
                await self.client.leave(self.group, self.member_id, self.secret)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
