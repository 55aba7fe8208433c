"""Long-poll wake-ups of a partition, for every store implementation.

Strategy: a reader that found nothing new parks on an ``asyncio.Event`` of its own loop
(``waiter``); whoever makes records durable calls ``notify`` from any thread, which sets
every parked event on its own loop (``call_soon_threadsafe``) and forgets them. A reader
that gave up (a long-poll that timed out) ``forget``s its event so an idle partition does
not collect one per poll until its next notify.
"""

from __future__ import annotations

import asyncio
import threading


class Waiters:
    """The ``waiter`` / ``forget`` / ``notify`` part of ``PartitionLog``."""

    def __init__(self) -> None:
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._waiters_lock = threading.Lock()

    def notify(self) -> None:
        """Wake long-pollers (called after records became durable; any thread)."""
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for loop, ev in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(ev.set)

    def waiter(self) -> asyncio.Event:
        ev = asyncio.Event()
        with self._waiters_lock:
            self._waiters.append((asyncio.get_running_loop(), ev))
        return ev

    def forget(self, ev: asyncio.Event) -> None:
        with self._waiters_lock:
            self._waiters = [w for w in self._waiters if w[1] is not ev]
