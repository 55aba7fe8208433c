"""Local consumers: ``GET /v1/streams/{name}/records?offset=&wait_ms=&max_records=``.

Strategy: a local alarm rule or HMI reads the agent's streams (raw and derived) by
offset on the status listener, without the cloud. Only durable records are served (the
same rule as the uplink: a record lost with an unsynced tail would otherwise be seen
here and then replaced). A long poll waits on the stream's ``Bell``, rung by the
ingest's durability waiter (raw) or the transform runner (derived), never by polling.

Bounds (docs/security.md): ``max_records`` <= 1000 and 1 MiB per answer, ``wait_ms``
<= 30000, at most ``MAX_WAITERS`` long polls at once (503 beyond), offsets and numbers
checked (400 naming the parameter); the log read runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from shared_log import Log, LogClosed, OffsetOutOfRange

MAX_RECORDS = 1000
MAX_BYTES = 1 << 20
MAX_WAIT_MS = 30_000
MAX_WAITERS = 64


class Bell:
    """Wakes every waiter once when rung (a fresh event per ring)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class BadParam(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _int(params: Any, name: str, default: int | None, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise BadParam(name, f"{name} is required")
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not lo <= int(raw) <= hi:
        raise BadParam(name, f"{name} must be an integer in {lo}..{hi}")
    return int(raw)


def _record(r: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"offset": r.offset, "timestamp": r.timestamp,
                           "key": r.key.decode("utf-8", "replace"),
                           "headers": {k: v.decode("utf-8", "replace") for k, v in r.headers}}
    try:
        out["value"] = r.value.decode("utf-8")
    except UnicodeDecodeError:
        out["value_b64"] = base64.b64encode(r.value).decode()
    return out


class LocalReader:
    """Serves the named logs; ``logs`` maps a stream name to (log, bell)."""

    def __init__(self) -> None:
        self.logs: dict[str, tuple[Log, Bell]] = {}
        self.waiters = 0

    def add(self, name: str, log: Log) -> Bell:
        bell = Bell()
        self.logs[name] = (log, bell)
        return bell

    async def read(self, name: str, params: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one request."""
        entry = self.logs.get(name)
        if entry is None:
            return 404, {"error": f"no stream {name!r}", "field": "name"}
        log, bell = entry
        try:
            offset = _int(params, "offset", None, 0, 2**63 - 1)
            wait_ms = _int(params, "wait_ms", 0, 0, MAX_WAIT_MS)
            limit = _int(params, "max_records", 100, 1, MAX_RECORDS)
        except BadParam as exc:
            return 400, {"error": str(exc), "field": exc.field}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        waiting = False
        try:
            while True:
                if offset < log.start_offset:
                    return 416, {"error": f"offset {offset} was deleted; the log starts at "
                                          f"{log.start_offset}", "field": "offset",
                                 "start_offset": log.start_offset}
                if offset < log.durable_offset or loop.time() >= deadline:
                    break
                if not waiting:
                    if self.waiters >= MAX_WAITERS:
                        return 503, {"error": "too many long polls", "field": "wait_ms"}
                    self.waiters += 1
                    waiting = True
                await bell.wait(deadline - loop.time())
        finally:
            if waiting:
                self.waiters -= 1
        end = log.durable_offset
        recs: list[Any] = []
        if offset < end:
            try:
                recs = await asyncio.to_thread(log.read, offset, limit, MAX_BYTES)
            except OffsetOutOfRange:  # deleted meanwhile: the next request gets its 416
                recs = []
            except LogClosed:
                return 503, {"error": "the agent is stopping", "field": "name"}
        recs = [r for r in recs if r.offset < end]
        nxt = recs[-1].offset + 1 if recs else offset
        return 200, {"stream": name, "records": [_record(r) for r in recs],
                     "next_offset": nxt, "start_offset": log.start_offset,
                     "durable_offset": end}


__all__ = ["MAX_RECORDS", "MAX_WAITERS", "MAX_WAIT_MS", "Bell", "LocalReader"]
