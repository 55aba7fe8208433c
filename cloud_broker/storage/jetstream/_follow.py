"""Reading a partition's stream back into its view: the catch-up and the follower.

Strategy: the view (``_view``) is only ever extended in sequence order under
``_apply_lock``. ``catch_up`` asks the stream for its first and last sequence and applies
every message the view has not seen (read ``READ_AHEAD`` at a time; a message deleted by
retention meanwhile is skipped); the writer calls it when a publish was refused or its
answer was lost, the follower task when another node ticked and every
``follow_interval_s`` in case a tick was lost. A message found with the writer's own
``Es-Tag`` is how a publish whose answer was lost is recognised as landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence, Sized

import nats.js.errors

from ._client import NATS_ERRORS, NO_MESSAGE, ClientThread, JetStreamUnavailable, unavailable
from ._readahead import ReadAhead, batch_get
from ._view import PartitionView, Piece, ViewError

log = logging.getLogger(__name__)
H_BASE, H_COUNT, H_MAXTS = "Es-Base", "Es-Count", "Es-Max-Ts"
H_ORIGIN, H_TAG = "Es-Origin", "Es-Tag"
#: sequences read concurrently on a catch-up
READ_AHEAD = 64


def piece_of(seq: int, headers: dict[str, str] | None, size: int) -> Piece:
    """The view's entry for message ``seq``; ViewError when its headers are not ours (a
    message some other publisher put on the subject cannot be given offsets)."""
    h = headers or {}
    origin, tag = h.get(H_ORIGIN), h.get(H_TAG)
    try:
        base, count, max_ts = (int(h.get(H_BASE, "")), int(h.get(H_COUNT, "")),
                               int(h.get(H_MAXTS, "0")))
    except ValueError:
        raise ViewError(f"message {seq} has no valid {H_BASE}/{H_COUNT} headers") from None
    if base < 0 or count < 0:
        raise ViewError(f"message {seq} claims offsets {base}+{count}")
    return Piece(seq, base, count, size, max_ts, origin.encode() if origin else None,
                 tag.encode() if tag else None)


class StreamFollower:
    """The catch-up half of ``JetStreamPartition`` (which sets these attributes)."""

    client: ClientThread
    stream: str
    view: PartitionView
    readahead: ReadAhead
    follow_interval_s: float
    _apply_lock: asyncio.Lock
    _hint: asyncio.Event
    _lock: threading.Lock
    _next: int
    _pending: Sized  # the appends still being published
    _failed: BaseException | None
    notify: Callable[[], None]  # Waiters'

    def _apply(self, piece: Piece, body: bytes | None) -> None:
        try:
            self.view.apply(piece, body)
        except ViewError as exc:
            self._failed = exc
            raise JetStreamUnavailable(f"{self.stream}: {exc}") from exc

    # -- reading the stream back ------------------------------------------------------------

    async def catch_up(self, tag: bytes | None = None) -> Piece | None:
        """Apply every message past the view's last sequence; returns the applied piece
        carrying ``tag`` if any. JetStreamUnavailable when the stream cannot be read."""
        async with self._apply_lock:
            try:
                info = await self.client.js.stream_info(self.stream)
            except NATS_ERRORS as exc:
                raise unavailable(exc, f"stream info of {self.stream}") from exc
            first, last = info.state.first_seq, info.state.last_seq
            view, mine, applied = self.view, None, 0
            if view.seqs and first > view.seqs[0]:
                view.trim(first)
            if first > view.last_seq + 1:
                view.skip_to(first)
            seq = view.last_seq + 1
            while seq <= last:
                chunk = range(seq, min(last, seq + READ_AHEAD - 1) + 1)
                msgs = await asyncio.gather(*(self._get(s) for s in chunk))
                for s, msg in zip(chunk, msgs, strict=True):
                    if msg is None:
                        view.skip_to(s + 1)
                        continue
                    headers, body = msg
                    try:
                        piece = piece_of(s, headers, len(body))
                    except ViewError as exc:
                        self._failed = exc
                        raise JetStreamUnavailable(f"{self.stream}: {exc}") from exc
                    self._apply(piece, body or None)
                    applied += 1
                    if tag is not None and piece.tag == tag:
                        mine = piece
                seq = chunk[-1] + 1
            with self._lock:
                self._next = max(self._next, view.end) if not self._pending else self._next
        if applied:
            self.notify()
        return mine

    async def _get(self, seq: int) -> tuple[dict[str, str] | None, bytes] | None:
        try:
            msg = await self.client.js.get_msg(self.stream, seq)
        except nats.js.errors.APIError as exc:
            if exc.err_code == NO_MESSAGE:
                return None
            raise unavailable(exc, f"read of {self.stream} #{seq}") from exc
        except NATS_ERRORS as exc:
            raise unavailable(exc, f"read of {self.stream} #{seq}") from exc
        return msg.headers, msg.data or b""

    async def _body(self, seq: int) -> bytes | None:
        """The body of a message the view already indexed that a batched read did not
        return: a direct get (raw bytes, no JSON or base64, answered by any replica), or
        the leader's get when no replica had it (a follower behind the leader answers
        "not found")."""
        try:
            msg = await self.client.js.get_msg(self.stream, seq, direct=True)
            return msg.data or b""
        except NATS_ERRORS:
            pass
        got = await self._get(seq)
        return None if got is None else got[1]

    def _load(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """Bodies the tail cache does not hold (a reader thread): batched, read ahead."""
        return self.client.run(self.readahead.load(seqs))

    async def _batch(self, seqs: Sequence[int], nbytes: int) -> dict[int, bytes]:
        return await batch_get(self.client.nc, self.stream, seqs, nbytes,
                               self.client.conn.request_timeout_s)

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.follow_interval_s):
                    await self._hint.wait()
            self._hint.clear()
            try:
                await self.catch_up()
            except JetStreamUnavailable as exc:
                log.debug("catch-up of %s: %s", self.stream, exc)
            except Exception:  # crash-only: log it, keep following (G9)
                log.exception("following %s failed; retrying", self.stream)
                await asyncio.sleep(self.follow_interval_s)

