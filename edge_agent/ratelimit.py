"""A token bucket for the uplink's bytes per second on metered links.

Strategy: the bucket holds at most one second of budget; a sender asks for the bytes of
the body it is about to send and sleeps for exactly the deficit. A body larger than the
bucket is allowed (it would otherwise never go) and pays its deficit afterwards.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        if rate <= 0:
            raise ValueError("rate must be > 0 bytes/s")
        self.rate = float(rate)
        self.capacity = float(rate)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def delay_for(self, nbytes: int) -> float:
        """Take ``nbytes`` now and return how long the caller must wait (pure, for tests)."""
        self._refill()
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, nbytes: int) -> None:
        async with self._lock:
            delay = self.delay_for(nbytes)
            if delay > 0:
                await asyncio.sleep(delay)
