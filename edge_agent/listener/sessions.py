"""Persistent MQTT sessions: which client ids have one, until when, on which connection.

Strategy: a device publishes and never subscribes here, so the server side of a session
holds no messages: the device keeps its unacknowledged QoS 1 readings and resends them
(DUP) when it reconnects into a session that is present, and the agent's per-device
sequence dedup drops the ones already stored. What the server must get right is the
*session present* flag: a client told "not present" discards its unacknowledged
readings (MQTT 5 3.2.2.1.1), so the set of sessions survives a kill -9 of the agent.

It lives in ``<data_dir>/listener/sessions.json`` ({client id: [expiry s, disconnected
at]}), rewritten whole (temp file, fsync, rename) by ``run`` whenever it changed. A CONNACK
that creates or ends a persistent session waits (``durable``) for the write that records
it - many connects share one write, like the log's group commit - so the flag a device
is told is the one it will be told after a crash. Disconnect times are written lazily:
after a crash a session counts as disconnected at load time (it lives a little longer).

Sessions expire ``expiry`` seconds after their connection ends (3.1.1 clean-session-off
sessions and v5 expiry intervals are capped by ``session_expiry_max_s``); beyond
``max_sessions`` the longest-disconnected session is dropped. Not thread-safe: the
listener's event loop only (the file write runs in a worker thread on a snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_log import atomic_write, read_checkpoint

log = logging.getLogger(__name__)

SESSIONS_FILE = "sessions.json"


@dataclass(slots=True)
class Session:
    client_id: str
    expiry_s: int  # 0: ends with its connection (never written)
    disconnected_at: float | None = None  # None while a connection holds it
    conn: Any = None  # the connection holding it


class Sessions:
    def __init__(self, directory: Path, max_sessions: int) -> None:
        self.directory = directory
        self.path = directory / SESSIONS_FILE
        self.max_sessions = max_sessions
        self.live: dict[str, Session] = {}
        self.writes = 0
        self._version = 0  # bumped by every change of the persistent set
        self._written = 0  # the version on disk
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()  # a change a CONNACK may be waiting for
        self._written_event = asyncio.Event()

    def load(self) -> int:
        """Read the sessions left by the previous run (expired ones dropped)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        raw = read_checkpoint(self.path, {})
        now = time.time()
        if isinstance(raw, dict):
            for cid, v in raw.items():
                if (isinstance(cid, str) and isinstance(v, list) and len(v) == 2
                        and isinstance(v[0], int) and isinstance(v[1], int | float | None)):
                    at = now if v[1] is None else min(float(v[1]), now)
                    if at + v[0] > now:
                        self.live[cid] = Session(cid, v[0], at)
        return len(self.live)

    def attach(self, client_id: str, clean_start: bool, expiry_s: int,
               conn: Any) -> tuple[bool, Any, bool]:
        """Give ``client_id``'s session to ``conn``: (session present, the connection it
        takes over or None, whether the CONNACK must wait for ``durable``)."""
        old = self.live.get(client_id)
        now = time.time()
        if old is not None and old.disconnected_at is not None and (
                old.disconnected_at + old.expiry_s <= now):
            old = None  # expired (the sweep had not got to it)
        previous = old.conn if old is not None else None
        present = old is not None and not clean_start
        was_saved = old is not None and old.expiry_s > 0
        self.live[client_id] = Session(client_id, expiry_s, None, conn)
        changed = was_saved != (expiry_s > 0) or (expiry_s > 0 and not present)
        if changed or (expiry_s > 0 and old is not None and old.expiry_s != expiry_s):
            self._changed()
        if len(self.live) > self.max_sessions:
            self._evict()
        return present, previous, changed

    def detach(self, client_id: str, conn: Any, expiry_s: int | None = None) -> None:
        """``conn`` ended; its session (if still its own) starts to expire."""
        s = self.live.get(client_id)
        if s is None or s.conn is not conn:
            return  # taken over: the new connection holds it
        if expiry_s is not None and expiry_s != s.expiry_s:  # v5 DISCONNECT may change it
            s.expiry_s = expiry_s
            self._changed()
        s.conn = None
        s.disconnected_at = time.time()
        if s.expiry_s == 0:
            del self.live[client_id]
        else:
            self._dirty.set()  # the time, lazily

    def sweep(self) -> int:
        """Drop expired sessions; returns how many."""
        now = time.time()
        gone = [cid for cid, s in self.live.items()
                if s.disconnected_at is not None and s.disconnected_at + s.expiry_s <= now]
        for cid in gone:
            del self.live[cid]
        if gone:
            self._changed()
        return len(gone)

    def _evict(self) -> None:
        idle = [s for s in self.live.values() if s.conn is None]
        if idle:
            oldest = min(idle, key=lambda s: s.disconnected_at or 0.0)
            del self.live[oldest.client_id]
            self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._dirty.set()
        self._urgent.set()

    def _snapshot(self) -> dict[str, list[Any]]:
        return {cid: [s.expiry_s, s.disconnected_at] for cid, s in self.live.items()
                if s.expiry_s > 0}

    async def durable(self) -> None:
        """Return once the current set of sessions is on disk."""
        target = self._version
        while self._written < target:
            await self._written_event.wait()

    async def run(self) -> None:
        """Write the file whenever it changed; sweep expired sessions once a minute."""
        last_sweep = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(60.0):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            if time.monotonic() - last_sweep >= 60.0:
                last_sweep = time.monotonic()
                self.sweep()
            if not self._dirty.is_set():
                continue
            if self._written == self._version:  # only disconnect times: no one waits, so a
                # burst of disconnects shares one write (a new session cuts the wait short)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._urgent.wait()
            self._dirty.clear()
            self._urgent.clear()
            version, data = self._version, json.dumps(self._snapshot()).encode()
            try:
                await asyncio.to_thread(atomic_write, self.path, data)
            except BaseException:  # ENOSPC...: the restarted task writes it again
                self._dirty.set()
                raise
            self.writes += 1
            self._written = version
            self._written_event.set()
            self._written_event = asyncio.Event()

    def flush(self) -> None:
        """Write the file now (at a clean stop)."""
        atomic_write(self.path, json.dumps(self._snapshot()).encode())
        self._written = self._version


__all__ = ["SESSIONS_FILE", "Session", "Sessions"]
