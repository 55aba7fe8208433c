"""The mirror target interface: where a mirror writes, and how a target may fail.

Strategy: a target is four coroutines (open, write, next_offset, close), as narrow as
litestream's replica client, so the tail/checkpoint loop (``runner.py``) is written once
and every backend is a small adapter that maps its library's exceptions to ours. One
conformance suite (tests/mirrors/test_mirror_conformance.py) runs against every target.

Contract of ``write(partition, records)``:

* ``records`` are one batch read from the source partition, in offset order, never empty.
  Offsets normally follow each other; they jump only where the source lost records
  (corrupt batches, retention that overtook a lagging mirror).
* On return every record of the batch is held by the target (durably, as far as the
  target can promise) and a later ``next_offset`` reflects it.
* Writing a batch again, whole or in part, must not duplicate anything the target already
  holds (a crash between write and checkpoint replays the last batch). Targets are
  idempotent by offset: JetStream by ``Nats-Msg-Id``, SQL by primary key, a broker by
  refusing any batch that does not start at its end offset.

Errors (everything a backend raises is mapped to one of these, ``raise ... from exc``)::

    TargetError                  base class; the message says what failed
     +-- TargetUnavailable       transient: connection refused or lost, timeout, 5xx,
     |                           a server that is still starting. Nothing or part of the
     |                           batch may be held. The runner retries the same batch with
     |                           exponential backoff, for ever: never skip.
     +-- TargetConflict          the target holds a different position than the batch
     |                           assumes (``next_offset``: where the target wants to
     |                           continue). The runner drops the batch and continues from
     |                           there (or from the source start, if that is later).
     +-- TargetRejected          permanent until someone acts: bad credentials, unknown
                                 topic, a gap the target cannot represent, bad config.
                                 The runner keeps retrying with its longest backoff and
                                 reports the partition as stalled.

``next_offset(partition)`` is the offset after the last record the target holds for the
partition: 0 when it provably holds none, ``None`` when it cannot tell (the runner then
trusts its own checkpoint). It raises the same errors as ``write``.

Optional: a target whose ``takes_stored`` is true may get ``records`` as a
``stored.StoredRecords`` from a local source: the same records, holding the stored
batches themselves for a target that converts them in one pass (the PostgreSQL target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shared_log import StoredRecord


class TargetError(Exception):
    """A mirror target failed; see the subclasses for what the runner does."""


class TargetUnavailable(TargetError):
    """Transient: retry the same batch after a backoff."""


class TargetConflict(TargetError):
    """The target continues at ``next_offset``, not where the batch starts."""

    def __init__(self, message: str, next_offset: int) -> None:
        super().__init__(message)
        self.next_offset = next_offset


class TargetRejected(TargetError):
    """Permanent until an operator acts; retried slowly, the partition is reported stalled."""


@runtime_checkable
class Target(Protocol):
    """Where one mirror writes one source topic. Used from one event loop."""

    #: a short description for logs and GET /v1/mirrors ("nats://host:4222 stream T")
    description: str

    async def open(self, topic: str, partitions: int) -> None:
        """Connect and prepare (create the stream or table when missing). Idempotent;
        called again with a larger count when the source topic grows."""

    async def write(self, partition: int, records: Sequence[StoredRecord]) -> None:
        """Hold ``records`` (one source batch, offset order) durably; see module doc."""

    async def next_offset(self, partition: int) -> int | None:
        """The offset after the last record held; 0 when none; None when unknown."""

    async def close(self) -> None:
        """Release connections. Idempotent; never raises."""


__all__ = ["Target", "TargetConflict", "TargetError", "TargetRejected", "TargetUnavailable"]
