"""Decoding request bodies without stalling the event loop or the machine.

Strategy: decoding is CPU work proportional to the body (decompression, the CBOR item
census, cbor2, the column checks), and on the event loop a large or hostile body would
stop every other request for as long as it takes. So only small uncompressed bodies
(at most ``INLINE_BYTES``, well under a millisecond) are decoded inline; every other body
is decoded in a worker thread, at most ``DECODE_SLOTS`` at a time per event loop. The
slots bound the memory and threads that parallel requests can take (a request waits for a
slot with its body already read and bounded by ``max_body_bytes``), and they stay taken
until the thread is done, even when the client goes away meanwhile.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Uncompressed bodies up to this size are decoded on the event loop (cheaper than a hop).
INLINE_BYTES = 64 * 1024
#: Decodes running in worker threads at once, per event loop.
DECODE_SLOTS = 2

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary())


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    sem = _slots.get(loop)
    if sem is None:
        sem = _slots[loop] = asyncio.Semaphore(DECODE_SLOTS)
    return sem


async def decode_off_loop(fn: Callable[[], T], inline: bool) -> T:
    """``fn()`` inline when ``inline``, else in a worker thread holding a decode slot."""
    if inline:
        return fn()
    sem = _semaphore()
    await sem.acquire()
    try:
        fut = asyncio.get_running_loop().run_in_executor(None, fn)
    except BaseException:
        sem.release()
        raise
    fut.add_done_callback(_release(sem))
    # shield: a client that disconnects cancels this task, not the thread; the slot is
    # released when the thread ends.
    return await asyncio.shield(fut)


def _release(sem: asyncio.Semaphore) -> Callable[[asyncio.Future[object]], None]:
    def done(fut: asyncio.Future[object]) -> None:
        sem.release()
        if not fut.cancelled():
            fut.exception()  # retrieved: nobody may await a request that went away
    return done
