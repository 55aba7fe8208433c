"""A pipeline's PUBACKs, in arrival order, sent as soon as their batch is durable.

Strategy: each appended batch (``inbox.Pending``) joins a queue; ``pump`` sends the
PUBACKs of the batches at its head whose appends are durable (their durability futures
done) and whose dead-letter entries are durable too, and stops at the first that is not.
It runs from the durability callback of an append (``ingest.StreamIngest._durable_done``),
so a batch is acknowledged in the same loop iteration as its fsync is reported, without a
task waking up for it: at a trickle that was two task steps and an ``asyncio.wait`` per
batch. The queue keeps MQTT's order (PUBACKs in the order of the PUBLISHes) because a
batch never overtakes the one before it.

G1: a batch whose fsync failed is never acknowledged (its readings come again after a
restart); dead letters of a batch are acknowledged only once they are durable, or their
log reported an error (the entry is lost then, the reading acknowledged: a dead letter
is evidence, not data). G9: an exception from ``send`` is kept in ``failed`` and reported
through ``on_failure`` (the pipeline ends with it and is restarted, its session
reconnected so that the broker redelivers what was never acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from .deadletter import DeadLetterLog
from .inbox import IngestStats, Pending

log = logging.getLogger(__name__)


class AckQueue:
    """The batches of one pipeline waiting for their PUBACKs (event loop thread only)."""

    def __init__(self, name: str, stats: IngestStats, deadletters: DeadLetterLog,
                 send: Callable[[list[tuple[int, int]]], object],
                 on_failure: Callable[[], None]) -> None:
        self.name, self.stats, self.deadletters = name, stats, deadletters
        self.send, self.on_failure = send, on_failure
        self.failed: BaseException | None = None  # set until the pipeline raises it
        self._queue: deque[Pending] = deque()
        self._dl_wait: asyncio.Future[None] | None = None  # the dead letters waited on

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, p: Pending) -> None:
        """A batch is appended (its durability futures made): acknowledge it when due."""
        self._queue.append(p)
        self.pump()

    def pump(self, _fut: object = None) -> None:
        """Acknowledge the durable batches at the head of the queue, in order."""
        queue = self._queue
        try:
            while queue:
                p = queue[0]
                for f in p.durable:
                    if not f.done():
                        return  # its durability callback pumps again
                if p.dl_last is not None and not self._dead_letters_durable(p.dl_last):
                    return
                queue.popleft()
                self._acknowledge(p)
        except Exception as exc:
            self.failed = exc
            log.error("stream %s: acknowledging failed: %s: %s", self.name,
                      type(exc).__name__, exc)
            self.on_failure()

    def _dead_letters_durable(self, last: int) -> bool:
        wait = self._dl_wait
        if wait is None:
            wait = self._dl_wait = self.deadletters.log.durable_future(last)
            if not wait.done():
                wait.add_done_callback(self.pump)
                return False
        elif not wait.done():
            return False
        self._dl_wait = None
        if not wait.cancelled() and (exc := wait.exception()) is not None:
            self.deadletters.last_error = f"{type(exc).__name__}: {exc}"
        return True

    def _acknowledge(self, p: Pending) -> None:
        st = self.stats
        errors = [f for f in p.durable if f.cancelled() or f.exception() is not None]
        if errors:
            # fsync failed: the log refuses further appends; never ack what is not
            # durable. Mosquitto redelivers these after a restart.
            f = errors[0]
            exc = asyncio.CancelledError() if f.cancelled() else f.exception()
            st.write_error = st.last_error = f"{type(exc).__name__}: {exc}"
            log.error("stream %s: durability failed, not acknowledging: %s", self.name, exc)
            return
        if p.acks:
            self.send(p.acks)
            st.pubacks += len(p.acks)
