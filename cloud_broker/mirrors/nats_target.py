"""NATS JetStream target: one stream per topic, one subject per partition.

Strategy: every record becomes one message on ``<prefix>.<topic>.<partition>`` with
``Nats-Msg-Id = <topic>/<partition>/<offset>``, so JetStream itself drops a replayed
record inside the stream's duplicate window; beyond it, the mirror resumes from the last
message of the subject (``get_last_msg``), whose offset header says where to continue.

A batch is published pipelined (``publish_async``) and then all acks are awaited, which
keeps one round trip per batch instead of per message. Order within a partition relies
on one TCP connection delivering in order, so nats-py's reconnect buffer is switched off
(``allow_reconnect=False``, no pending buffer): a message written into a dead connection
is lost *with everything after it*, never overtaken by a later one that nats-py would
replay on a new connection. After any failure the connection is dropped and the whole
batch is published again on a new one; Msg-Id deduplication removes the prefix JetStream
already held. (A server that rejects one message and accepts the next, e.g. during an R3
leader change, could still reorder; that case is detected and logged.)

Message layout (the value is the payload, unchanged)::

    Nats-Msg-Id           <topic>/<partition>/<offset>
    Edgestream-Offset     source offset (decimal)
    Edgestream-Timestamp  record timestamp, epoch ms (decimal)
    Edgestream-Key        the key, when it is printable ASCII; else
    Edgestream-Key-B64    the key, base64 (no key header at all: the empty key)
    Edgestream-Headers    the record's headers, JSON [[name, base64 value], ...] (if any)

``record_from_message`` turns a message back into a StoredRecord.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from shared_log import StoredRecord

from .target import TargetRejected, TargetUnavailable

log = logging.getLogger(__name__)

H_OFFSET = "Edgestream-Offset"
H_TIMESTAMP = "Edgestream-Timestamp"
H_KEY = "Edgestream-Key"
H_KEY_B64 = "Edgestream-Key-B64"
H_HEADERS = "Edgestream-Headers"
MSG_ID = "Nats-Msg-Id"
NO_MESSAGE = 10037  # JetStream API err_code: no message found


def message_headers(topic: str, partition: int, rec: StoredRecord) -> dict[str, str]:
    h = {MSG_ID: f"{topic}/{partition}/{rec.offset}", H_OFFSET: str(rec.offset),
         H_TIMESTAMP: str(rec.timestamp)}
    if rec.key:
        if rec.key.isascii() and rec.key.decode().isprintable() and rec.key.strip() == rec.key:
            h[H_KEY] = rec.key.decode()
        else:
            h[H_KEY_B64] = base64.b64encode(rec.key).decode()
    if rec.headers:
        h[H_HEADERS] = json.dumps([[n, base64.b64encode(v).decode()] for n, v in rec.headers])
    return h


def record_from_message(headers: Mapping[str, str] | None, data: bytes) -> StoredRecord:
    """The record a mirrored message carries (for consumers of the stream)."""
    h = headers or {}
    if H_KEY in h:
        key = h[H_KEY].encode()
    elif H_KEY_B64 in h:
        key = base64.b64decode(h[H_KEY_B64])
    else:
        key = b""
    rh = tuple((n, base64.b64decode(v)) for n, v in json.loads(h.get(H_HEADERS, "[]")))
    return StoredRecord(int(h[H_OFFSET]), key, data or b"", int(h[H_TIMESTAMP]), rh)


class NatsTarget:
    """Mirror into JetStream; see the module docstring."""

    def __init__(self, servers: Sequence[str], stream: str, subject_prefix: str = "edgestream",
                 replicas: int = 1, duplicate_window_s: float = 120.0, timeout_s: float = 10.0
                 ) -> None:
        self.servers = list(servers)
        self.stream = stream
        self.prefix = subject_prefix
        self.replicas = replicas
        self.duplicate_window_s = duplicate_window_s
        self.timeout_s = timeout_s
        self.description = f"{','.join(self.servers)} stream {stream}"
        self._topic = ""
        self._nc: nats.NATS | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._stream_ready = False
        self.reorders = 0

    def subject(self, partition: int) -> str:
        return f"{self.prefix}.{self._topic}.{partition}"

    async def open(self, topic: str, partitions: int) -> None:
        self._topic = topic
        await self._connection()

    async def _connection(self) -> nats.js.JetStreamContext:
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed and self._js is not None:
                return self._js
            await self._drop()

            async def quiet(exc: Exception) -> None:
                log.debug("nats %s: %s", self.description, exc)

            try:
                # max_reconnect_attempts=1: with 0, nats-py's connect retries a dead server
                # for ever; the runner's backoff is the retry loop, not nats-py's.
                nc = await asyncio.wait_for(nats.connect(
                    servers=self.servers, allow_reconnect=False, connect_timeout=self.timeout_s,
                    pending_size=0, max_reconnect_attempts=1, reconnect_time_wait=0.05,
                    error_cb=quiet), self.timeout_s * (len(self.servers) + 1))
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                raise TargetUnavailable(f"cannot connect to {self.servers}: {exc!r}") from exc
            self._nc, self._js = nc, nc.jetstream(timeout=self.timeout_s)
            if not self._stream_ready:
                try:
                    await self._ensure_stream(self._js)
                except BaseException:
                    await self._drop()
                    raise
            return self._js

    async def _ensure_stream(self, js: nats.js.JetStreamContext) -> None:
        subjects = f"{self.prefix}.{self._topic}.*"
        try:
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(
                    name=self.stream, subjects=[subjects], num_replicas=self.replicas,
                    duplicate_window=self.duplicate_window_s, storage=StorageType.FILE))
            else:
                if subjects not in (info.config.subjects or []):
                    raise TargetRejected(f"stream {self.stream} exists without subjects "
                                         f"{subjects} (has {info.config.subjects})")
        except nats.js.errors.APIError as exc:
            raise _map(exc, f"cannot create stream {self.stream}") from exc
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise TargetUnavailable(f"cannot create stream {self.stream}: {exc!r}") from exc
        self._stream_ready = True

    async def _drop(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)

    async def write(self, partition: int, records: Sequence[StoredRecord]) -> None:
        js = await self._connection()
        subject = self.subject(partition)
        futures: list[asyncio.Future] = []

        async def publish_all() -> list:
            # No wait_stall: a timeout per message would yield to the loop after every
            # message and make nats-py flush each one alone (half the rate). The one timeout
            # around the whole batch also covers a stall on publish_async's semaphore.
            for rec in records:
                futures.append(await js.publish_async(
                    subject, rec.value, headers=message_headers(self._topic, partition, rec)))
            return await asyncio.gather(*futures, return_exceptions=True)

        try:
            results = await asyncio.wait_for(publish_all(), self.timeout_s)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            for f in futures:
                f.cancel()
            await self._reset()
            raise TargetUnavailable(f"publish to {subject} failed: {exc!r}") from exc
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is None:
            return
        first = results.index(failed)
        if any(not isinstance(r, BaseException) and not r.duplicate for r in results[first:]):
            self.reorders += 1
            log.error("nats: %s stored a message after one it rejected (%r); the replay "
                      "will store the rejected one out of order", subject, failed)
        await self._reset()
        if isinstance(failed, nats.js.errors.APIError):
            raise _map(failed, f"publish to {subject} failed") from failed
        raise TargetUnavailable(f"publish to {subject} failed: {failed!r}") from failed

    async def _reset(self) -> None:
        async with self._lock:
            await self._drop()
            self._stream_ready = False  # cheap to check again; the stream may be gone

    async def next_offset(self, partition: int) -> int | None:
        js = await self._connection()
        try:
            msg = await js.get_last_msg(self.stream, self.subject(partition))
        except nats.js.errors.NotFoundError as exc:
            if exc.err_code not in (NO_MESSAGE, None):
                raise _map(exc, "get_last_msg") from exc
            try:
                info = await js.stream_info(self.stream)
            except (nats.js.errors.APIError, OSError, TimeoutError, nats.errors.Error) as e2:
                await self._reset()
                raise TargetUnavailable(f"stream_info {self.stream}: {e2!r}") from e2
            # A stream that never stored anything holds nothing of this partition; a stream
            # that did may have aged the subject's messages out: unknown, trust the checkpoint.
            return 0 if info.state.last_seq == 0 else None
        except nats.js.errors.APIError as exc:
            raise _map(exc, "get_last_msg") from exc
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            await self._reset()
            raise TargetUnavailable(f"get_last_msg {self.subject(partition)}: {exc!r}") from exc
        try:
            return int((msg.headers or {})[H_OFFSET]) + 1
        except (KeyError, ValueError) as exc:
            raise TargetRejected(f"last message of {self.subject(partition)} has no "
                                 f"{H_OFFSET} header: not written by a mirror") from exc

    async def close(self) -> None:
        await self._reset()


STREAM_NOT_FOUND = 10059


def _map(exc: nats.js.errors.APIError, what: str) -> TargetUnavailable | TargetRejected:
    """5xx and 'no responders' are transient; 4xx (bad config, limits) are permanent."""
    code = exc.code or 0
    if exc.err_code == STREAM_NOT_FOUND:  # deleted under us: recreated on the next connect
        return TargetUnavailable(f"{what}: {exc}")
    if isinstance(exc, nats.js.errors.ServiceUnavailableError) or code >= 500 or code == 0:
        return TargetUnavailable(f"{what}: {exc}")
    return TargetRejected(f"{what}: {exc}")
