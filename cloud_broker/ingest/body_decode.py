"""Decoding request bodies without stalling the event loop or the machine.

Strategy: decoding is CPU work proportional to the body (decompression, the CBOR item
census, cbor2, the column checks), and on the event loop a large or hostile body would
stop every other request for as long as it takes. So only bodies known to be small
(uncompressed, or a zstd frame that declares its size, at most ``INLINE_BYTES`` either
way: well under a millisecond) are decoded inline; every other body is decoded in a pool
of its own of ``DECODE_SLOTS`` threads. The pool bounds the CPU,
threads and memory that parallel requests can take (the others wait with their body,
already bounded by ``max_body_bytes``, until a thread is free), and keeps decoding away
from the event loop's default executor, where the partitions' fsyncs run: a flood of
bodies delays other bodies, never durability. A request whose client goes away before
its turn is dropped from the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import zstandard

T = TypeVar("T")

#: Uncompressed bodies up to this size are decoded on the event loop (cheaper than a hop).
INLINE_BYTES = 16 * 1024  # about 1-1.5 ms of decoding at most (64 KiB took up to 5.8 ms)
#: Bodies decoded at once (threads of the decode pool), per process.
DECODE_SLOTS = 2

_pool = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="body-decode")


def small_enough_inline(body: bytes, content_encoding: str | None) -> bool:
    """True when decoding ``body`` is known to be cheap: at most ``INLINE_BYTES`` both on
    the wire and decoded. gzip never is (its size is known only by inflating it)."""
    if len(body) > INLINE_BYTES:
        return False
    token = (content_encoding or "identity").strip().lower()
    if token == "identity":
        return True
    if token == "zstd":
        try:  # a frame that declares its size is decompressed to that size or refused
            return 0 <= zstandard.frame_content_size(body) <= INLINE_BYTES
        except zstandard.ZstdError:
            return False
    return False


async def decode_off_loop(fn: Callable[[], T], inline: bool) -> T:
    """``fn()`` inline when ``inline``, else in the decode pool."""
    if inline:
        return fn()
    fut = asyncio.get_running_loop().run_in_executor(_pool, fn)
    fut.add_done_callback(_retrieve)
    del fn
    try:
        return await fut
    finally:
        # The future holds the exception, whose traceback holds this frame: without the
        # del that is a cycle keeping the body alive until the (rare, with the broker's
        # GC thresholds) full collection. Hostile requests must not pile up in memory.
        del fut


def _retrieve(fut: asyncio.Future[object]) -> None:
    # Nobody awaits the decode of a request that went away: retrieve its error.
    if not fut.cancelled():
        fut.exception()
