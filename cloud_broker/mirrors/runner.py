"""The mirror loop: tail every partition of a topic into a target, checkpointing.

Strategy: one task per partition, each doing only this, with at most two batches in
memory:

    resume:  position = target.next_offset(p)   (the target's word wins)
                        or the checkpoint       (when the target cannot tell)
                        or the source start
    loop:    batch = source.read(p, position)   (long poll, bounded by records and bytes)
             target.write(p, batch)             (retried with backoff until it holds),
               meanwhile the next batch is read from batch.next_offset (read ahead)
             position = batch.next_offset; checkpoint(p, position)

Because a batch is read at most one ahead of the one being written, a slow or dead target
just stops the loop: memory stays bounded and the broker's ingest never waits for a
mirror (reads come from the partition files, off the event loop). Nothing is ever skipped
on the target side: a failing write is retried with exponential backoff (tenacity) for
ever, a permanent failure is retried at the longest backoff and the partition reported
``stalled``. The only records a mirror does not copy are records the *source* no longer
has (retention overtook a lagging mirror, corrupt batches); they are counted as lost.

Replays are harmless by the target contract (target.py): a crash between write and
checkpoint re-sends at most one batch per partition, which the target deduplicates or
refuses with its position (TargetConflict), and the loop continues from there. An idle
partition re-asks the target its position every ``verify_interval_s`` so a target that
lost data (restored from an old backup, a stream recreated) is refilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from ..redact import redact
from ..storage import UnknownTopic
from .checkpoints import CheckpointStore
from .settings import MirrorConfig
from .source import Source, SourceBatch, SourceUnavailable
from .stored import span
from .target import Target, TargetConflict, TargetRejected, TargetUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIED = (TargetUnavailable, TargetRejected, SourceUnavailable, UnknownTopic)
PARTITION_REFRESH_S = 30.0


@dataclass
class PartitionStatus:
    """What GET /v1/mirrors and /metrics show for one partition of a mirror."""

    partition: int
    position: int | None = None  # next source offset to copy
    end_offset: int | None = None  # the source's durable end, as last seen
    state: str = "starting"  # starting | copying | idle | retrying | stalled
    records_copied: int = 0
    records_lost: int = 0  # gone from the source before they were copied
    retries: int = 0
    last_error: str | None = None
    updated_at: float = 0.0

    @property
    def lag(self) -> int | None:
        if self.position is None or self.end_offset is None:
            return None
        return max(0, self.end_offset - self.position)

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "position": self.position,
                "end_offset": self.end_offset, "lag": self.lag, "state": self.state,
                "records_copied": self.records_copied, "records_lost": self.records_lost,
                "retries": self.retries, "last_error": self.last_error,
                "updated_at": self.updated_at}


class MirrorRunner:
    """Runs one mirror until cancelled. Owns the target (closes it when done)."""

    def __init__(self, config: MirrorConfig, source: Source, target: Target,
                 checkpoints: CheckpointStore) -> None:
        self.config = config
        self.source = source
        self.target = target
        self.checkpoints = checkpoints
        self.partitions: dict[int, PartitionStatus] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._saved: dict[int, int] = {}
        self._backoff = (wait_exponential(multiplier=0.05, max=config.max_backoff_s)
                         + wait_random(0, 0.1 * config.max_backoff_s))

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> dict[str, Any]:
        parts = [self.partitions[p].to_dict() for p in sorted(self.partitions)]
        # unknown (None) until every partition's lag is known: a sum over the known ones
        # would say "caught up" while a partition has not been read yet
        lags = [p["lag"] for p in parts]
        # Masked here, where it is built: target descriptions and error texts may carry
        # a URL with credentials, and every caller (GET and POST /v1/mirrors) gets it safe.
        return redact({**self.config.public(), "target_description": self.target.description,
                       "lag": sum(lags) if lags and None not in lags else None,
                       "partitions": parts})

    # -- retrying ------------------------------------------------------------------------

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, TargetRejected):
            return self.config.max_backoff_s
        return self._backoff(rs)

    async def _retrying(self, ps: PartitionStatus, what: str,
                        fn: Callable[[], Awaitable[T]]) -> T:
        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            ps.retries += 1
            ps.state = "stalled" if isinstance(exc, TargetRejected) else "retrying"
            ps.last_error = f"{what}: {exc}"
            ps.updated_at = time.time()
            if rs.attempt_number in (1, 10) or rs.attempt_number % 100 == 0:
                log.warning("mirror %s partition %d: %s failed (attempt %d), retrying: %s",
                            self.name, ps.partition, what, rs.attempt_number, exc)

        async for attempt in AsyncRetrying(retry=retry_if_exception_type(RETRIED),
                                           wait=self._wait, before_sleep=before_sleep,
                                           reraise=True):
            with attempt:
                result = await fn()
        if ps.state in ("retrying", "stalled"):
            log.info("mirror %s partition %d: %s works again", self.name, ps.partition, what)
            ps.state, ps.last_error = "copying", None
        return result

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        boot = PartitionStatus(-1)
        try:
            n = await self._retrying(boot, "read partitions",
                                     lambda: self.source.partitions(cfg.topic))
            await self._retrying(boot, "open target", lambda: self.target.open(cfg.topic, n))
            self._saved = await self.checkpoints.aload(cfg.name)
            self._spawn(n)
            while True:
                await asyncio.sleep(PARTITION_REFRESH_S)
                with contextlib.suppress(*RETRIED):
                    grown = await self.source.partitions(cfg.topic)
                    if grown > len(self._tasks):
                        await self.target.open(cfg.topic, grown)
                        self._spawn(grown)
        finally:
            for t in self._tasks.values():
                t.cancel()
            for t in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.target.close()

    def _spawn(self, n: int) -> None:
        for p in range(len(self._tasks), n):
            self.partitions[p] = PartitionStatus(p)
            self._tasks[p] = asyncio.create_task(self._supervise(p),
                                                 name=f"mirror-{self.name}-{p}")

    async def _supervise(self, p: int) -> None:
        while True:
            try:
                await self._partition(p)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the mirror: log, back off, resume
                log.exception("mirror %s partition %d failed; restarting it", self.name, p)
                ps = self.partitions[p]
                ps.state, ps.last_error = "retrying", f"internal error: {exc!r}"
                await asyncio.sleep(self.config.max_backoff_s)

    async def _resume(self, p: int) -> int:
        held = await self.target.next_offset(p)
        saved = self._saved.get(p)
        if held is not None:
            if saved is not None and held != saved:
                log.info("mirror %s partition %d: target holds up to %d, checkpoint said %d; "
                         "continuing from the target", self.name, p, held, saved)
            return held
        return saved if saved is not None else 0

    async def _partition(self, p: int) -> None:
        cfg, ps = self.config, self.partitions[p]
        pos = await self._retrying(ps, "target position", lambda: self._resume(p))
        ps.position, ps.state, ps.updated_at = pos, "copying", time.time()
        if self._saved.get(p) != pos:
            # The target is ahead of the checkpoint (a stop or kill between a write and
            # its checkpoint): catch the checkpoint up, for targets that cannot tell later.
            await self._checkpoint(ps, pos)
        verified = time.monotonic()
        # Only asked of a target that says so: other sources need not know the keyword.
        how = {"stored": True} if getattr(self.target, "takes_stored", False) else {}
        ahead: tuple[int, asyncio.Task[SourceBatch]] | None = None
        try:
            while True:
                if ahead is not None and ahead[0] == pos:
                    batch = await ahead[1]
                else:
                    if ahead is not None:
                        await _cancelled(ahead[1])
                    batch = await self._read(ps, pos, how)
                ahead = None
                ps.end_offset = batch.end_offset
                lost = batch.next_offset - pos - len(batch.records)
                if lost > 0:
                    ps.records_lost += lost
                    log.warning("mirror %s partition %d: %d records from offset %d are gone "
                                "from the source (retention or corruption: %s) and cannot be "
                                "copied", self.name, p, lost, pos,
                                batch.skipped or "before start")
                if batch.records:
                    ps.state = "copying"
                    # Read ahead while the batch is written: the source's read and the
                    # target's round trips overlap (two batches in memory at most, and a
                    # stalled target still stops the loop after one read ahead).
                    ahead = (batch.next_offset, asyncio.create_task(
                        self._read(ps, batch.next_offset, how)))
                    new = await self._retrying(ps, "write target",
                                               lambda pos=pos, b=batch: self._write(p, pos, b))
                    ps.records_copied += len(batch.records) if new == batch.next_offset else 0
                    verified = time.monotonic()
                elif batch.next_offset != pos:
                    new = batch.next_offset
                else:
                    ps.state = "idle"
                    if time.monotonic() - verified >= cfg.verify_interval_s:
                        verified = time.monotonic()
                        new = await self._verify(p, pos)
                    else:
                        new = pos
                if new != pos:
                    pos = ps.position = new
                    ps.updated_at = time.time()
                    await self._checkpoint(ps, pos)
        finally:
            if ahead is not None:
                await _cancelled(ahead[1])

    async def _read(self, ps: PartitionStatus, pos: int, how: dict[str, Any]) -> SourceBatch:
        cfg = self.config
        return await self._retrying(
            ps, "read source", lambda: self.source.read(
                cfg.topic, ps.partition, pos, cfg.batch_records, cfg.batch_bytes,
                cfg.wait_ms / 1000, **how))

    async def _checkpoint(self, ps: PartitionStatus, pos: int) -> None:
        """Save the position; a failure is logged, not retried: the checkpoint is a hint
        (the target's position wins on resume) and the next batch writes a newer one."""
        try:
            await self.checkpoints.asave(self.config.name, self.config.topic, ps.partition, pos)
        except (sqlite3.Error, OSError) as exc:
            ps.retries += 1
            ps.last_error = f"checkpoint: {exc}"
            log.warning("mirror %s partition %d: checkpoint failed: %s", self.name,
                        ps.partition, exc)

    async def _write(self, p: int, pos: int, batch: SourceBatch) -> int:
        """Write a batch; the position to continue from."""
        try:
            await self.target.write(p, batch.records)
            return batch.next_offset
        except TargetConflict as c:
            first = span(batch.records)[0]
            if c.next_offset == pos and first > pos:
                raise TargetRejected(
                    f"source records {pos}..{first - 1} are gone and {self.target.description}"
                    f" cannot leave a gap ({c})") from c
            log.info("mirror %s partition %d: target continues at %d (batch started at %d)",
                     self.name, p, c.next_offset, first)
            return max(c.next_offset, batch.start_offset)

    async def _verify(self, p: int, pos: int) -> int:
        try:
            held = await self.target.next_offset(p)
        except (TargetUnavailable, TargetRejected) as exc:
            log.debug("mirror %s partition %d: verify failed: %s", self.name, p, exc)
            return pos
        if held is not None and held != pos:
            log.warning("mirror %s partition %d: target holds up to %d but the mirror is at "
                        "%d; continuing from the target", self.name, p, held, pos)
            return held
        return pos


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel a read ahead no longer wanted and wait for it to end. Its error, if it
    failed, is of no interest (the position it read from is not ours any more); our own
    cancellation still reaches us (``asyncio.wait`` raises only that)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()
