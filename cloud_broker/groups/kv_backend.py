"""Group state in a JetStream key-value bucket, shared by every broker node of a cluster.

Strategy: one key per group (``g.<hex of the name>``: any group name is a valid key, and
the name itself is inside the record), its value the JSON ``live_form`` record, history 1.
``put`` is a compare-and-set on the key's revision: ``create`` for a new group (fails if
another node created it first), ``update(last=revision)`` otherwise, which JetStream
checks on the stream leader (``Nats-Expected-Last-Subject-Sequence``) after Raft
replication, so of two nodes that read the same revision exactly one stores its change
and the other gets ``GroupConflict`` and re-decides on the newer record. No lock service:
the bucket's own sequence numbers are the fence. Reads go to the leader (``direct`` off),
so a node does not re-decide on a stale follower copy.

Membership is visible across nodes because it *is* the record: a heartbeat stores the
member's ``last_seen`` (wall-clock seconds), so a node that never saw the member still
expires it at the same instant as every other node (clocks must be NTP-synced; skew adds
to the session timeout). Generations, member secrets and offsets travel in the same
record, so a commit is checked and stored in one CAS: a zombie of an old generation, or a
commit racing a rebalance on another node, can never land.

A watcher on the whole bucket feeds every change (including other nodes') to
``on_change``, which keeps the coordinator's read-only view (describe, lag, Kafka) fresh
and wakes joins waiting for a rebalance that another node completed. The watcher task is
restarted with backoff if it ends (G9); the joins do not depend on it (they also poll).

Bounds: a record is one group's members and partitions (JetStream refuses values above
the server's max_payload, 1 MiB by default; that surfaces as ``GroupStoreError``, a 503);
the watcher's queue is nats-py's (256 entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from .backend import Commit, GroupConflict, Record, Versioned, from_live
from .store import GroupStoreError

log = logging.getLogger(__name__)
DEFAULT_BUCKET = "es_groups"
_PREFIX = "g."


def bucket_for(stream_prefix: str) -> str:
    """The bucket of a deployment: ``<stream_prefix>_groups`` (``[storage.jetstream]``),
    so deployments sharing one NATS cluster keep their groups apart."""
    return f"{stream_prefix}_groups"


def key_of(name: str) -> str:
    return _PREFIX + name.encode().hex()


def name_of(key: str) -> str | None:
    if not key.startswith(_PREFIX):
        return None
    try:
        return bytes.fromhex(key[len(_PREFIX):]).decode()
    except ValueError:
        return None


def decode(key: str, value: bytes | None) -> Record | None:
    """A record another node stored, or None (logged) if it is not one: valid JSON, the
    name its key says, and a group ``from_live`` can rebuild."""
    try:
        record = json.loads(value or b"")
        if isinstance(record, dict) and record.get("name") == name_of(key):
            from_live(record)
            return record
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError):
        pass
    log.warning("group bucket: ignoring unreadable value under %r", key)
    return None


_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


class KvGroupBackend:
    """A ``GroupBackend`` over a JetStream KV bucket; open with ``await open(js)``."""

    shared = True

    def __init__(self, kv: Any, records: dict[str, Versioned]) -> None:
        self.kv = kv
        self.on_change: Callable[[str, Versioned | None], None] | None = None
        self._records = records
        self._task: asyncio.Task[None] | None = None
        self._nc: Any = None  # the connection ``connect`` made (closed by ``aclose``)
        self.watch_restarts = 0

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = DEFAULT_BUCKET,
                   replicas: int = 3) -> KvGroupBackend:
        """Bind to (or create) the bucket, read every group, start the watcher."""
        try:
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=bucket, history=1, replicas=replicas, direct=False,
                    storage=api.StorageType.FILE,
                    description="consumer groups and committed offsets (cloud-broker)")
            backend = cls(kv, {})
            watcher = await kv.watchall()
            async for entry in watcher:
                if entry is None:  # the initial values are all in
                    break
                backend._apply(entry)
        except _NATS_ERRORS as exc:
            raise GroupStoreError(f"cannot open the group bucket {bucket!r}: {exc}") from exc
        backend._task = asyncio.create_task(backend._watch(watcher), name="groups-kv-watch")
        return backend

    @classmethod
    async def connect(cls, connection: Any, replicas: int,
                      bucket: str = DEFAULT_BUCKET) -> KvGroupBackend:
        """Open the bucket over a connection of its own on this event loop. ``connection``
        is ``[storage.jetstream]`` (servers, credentials, request timeout); the connection
        reconnects forever, as the store's does."""
        opts: dict[str, Any] = {
            "servers": list(connection.servers), "name": "cloud-broker groups",
            "connect_timeout": getattr(connection, "connect_timeout_s", 5.0),
            "max_reconnect_attempts": -1,
            "error_cb": _quiet, "disconnected_cb": _nothing, "reconnected_cb": _nothing}
        for ours, theirs in (("user", "user"), ("password", "password"), ("token", "token"),
                             ("creds_file", "user_credentials")):
            if getattr(connection, ours, None) is not None:
                opts[theirs] = str(getattr(connection, ours))
        try:
            nc = await nats.connect(**opts)
        except _NATS_ERRORS as exc:
            raise GroupStoreError(f"cannot connect to {list(connection.servers)}: {exc}"
                                  ) from exc
        try:
            backend = await cls.open(nc.jetstream(timeout=connection.request_timeout_s),
                                     bucket, replicas)
        except BaseException:
            await nc.close()
            raise
        backend._nc = nc
        return backend

    def snapshot(self) -> dict[str, Versioned]:
        return dict(self._records)

    async def get(self, name: str) -> Versioned | None:
        key = key_of(name)
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise GroupStoreError(f"cannot read group {name!r}: {exc}") from exc
        record = decode(key, entry.value)
        if record is None:
            raise GroupStoreError(f"group {name!r}: the stored record is unreadable")
        return Versioned(record, int(entry.revision))

    async def put(self, record: Record, revision: int, *, membership: bool,
                  commits: Sequence[Commit] = (), member_id: str | None = None) -> int:
        name = record["name"]
        data = json.dumps(record, separators=(",", ":")).encode()
        try:
            if revision == 0:
                new = await self.kv.create(key_of(name), data)
            else:
                new = await self.kv.update(key_of(name), data, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise GroupConflict(f"group {name!r} changed since revision {revision}") from exc
        except _NATS_ERRORS as exc:
            raise GroupStoreError(f"cannot store group {name!r}: {exc}") from exc
        self._remember(name, Versioned(record, int(new)))
        return int(new)

    def _remember(self, name: str, v: Versioned | None) -> None:
        old = self._records.get(name)
        if v is not None and old is not None and old.revision >= v.revision:
            return  # the watcher already brought something newer
        if v is None:
            self._records.pop(name, None)
        else:
            self._records[name] = v
        if self.on_change is not None:
            self.on_change(name, v)

    def _apply(self, entry: Any) -> None:
        name = name_of(entry.key)
        if name is None:
            return
        if entry.operation in ("DEL", "PURGE"):
            self._remember(name, None)
            return
        record = decode(entry.key, entry.value)
        if record is not None:
            self._remember(name, Versioned(record, int(entry.revision)))

    async def _watch(self, watcher: Any) -> None:
        """Feed every change to ``on_change``; a broken watch is made again, with backoff."""
        delay = 0.1
        while True:
            try:
                async for entry in watcher:
                    if entry is not None:
                        self._apply(entry)
                        delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed must not die silently (G9)
                log.warning("group bucket watch failed, watching again: %s", exc)
            self.watch_restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            with contextlib.suppress(*_NATS_ERRORS):
                watcher = await self.kv.watchall()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        self.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._nc.close()


async def _quiet(exc: Exception) -> None:
    log.debug("group bucket connection: %s", exc)  # reconnects are expected in a cluster


async def _nothing() -> None:
    return None


__all__ = ["DEFAULT_BUCKET", "KvGroupBackend", "bucket_for", "decode", "key_of", "name_of"]
