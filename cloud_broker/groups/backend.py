"""Where group state lives: the ``GroupBackend`` interface and its local implementation.

Strategy: the coordinator never keeps the truth itself. Every change is a
read-modify-write of one *record* per group (membership, live sessions, the rebalance in
progress and the committed offsets, ``live_form``) under a *revision*: ``get`` returns the
record and its revision, ``put`` stores a new record only if the revision is still the
one read (compare-and-set) and raises ``GroupConflict`` otherwise, after which the
coordinator reads again and re-decides. Two implementations:

* ``LocalGroupBackend`` (this module): one broker process. Records and revisions in
  memory, the durable part in SQLite (``store.GroupStore``: membership when it changed,
  committed offsets in the same call that stores the record), written on one thread so
  writes keep their order. Times are the coordinator's monotonic clock.
* ``KvGroupBackend`` (``kv_backend``): a JetStream key-value bucket shared by every broker
  node of a cluster; the revision is the bucket's, and ``put`` is JetStream's
  expected-last-subject-sequence check, so two nodes changing one group cannot both win.
  Times are wall-clock seconds (every node must see the same session deadlines).

Interface (every method may raise ``GroupStoreError`` when the backend is unreachable or
refuses a write; ``get`` of an unknown group is ``None``, never an error)::

    shared: bool                              several broker nodes use it at once
    snapshot() -> dict[str, Versioned]        every group known now (no I/O)
    on_change: Callable[[str, Versioned | None], None] | None
                                              set by the coordinator; called for changes
                                              made by other nodes (shared backends)
    async get(name) -> Versioned | None       the current record
    async put(record, revision, *, membership, commits, member_id) -> int
                                              CAS store; 0 = "the group must not exist";
                                              the new revision, or GroupConflict
    close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .state import Group
from .store import GroupStore, GroupStoreError

Record = dict[str, Any]
Commit = tuple[str, int, int]


class GroupConflict(Exception):
    """Another change to the group was stored since it was read: read again."""


@dataclass(frozen=True, slots=True)
class Versioned:
    record: Record
    revision: int


class GroupBackend(Protocol):
    shared: bool
    on_change: Callable[[str, Versioned | None], None] | None

    def snapshot(self) -> dict[str, Versioned]: ...

    async def get(self, name: str) -> Versioned | None: ...

    async def put(self, record: Record, revision: int, *, membership: bool,
                  commits: Sequence[Commit] = (), member_id: str | None = None) -> int: ...

    def close(self) -> None: ...


def live_form(g: Group) -> Record:
    """``Group.to_dict`` plus what a restart may forget but other nodes must see: the
    offsets, each member's last sign of life, the rebalance's pending set and deadline."""
    d = g.to_dict()
    d["offsets"] = [[t, p, o] for (t, p), o in sorted(g.offsets.items())]
    d["live"] = {"last_seen": {m.member_id: m.last_seen for m in g.members.values()},
                 "pending": sorted(g.pending), "deadline": g.deadline}
    return d


def from_live(d: Record) -> Group:
    """The group ``live_form`` wrote, sessions and rebalance as they were."""
    g = Group.from_dict(d, 0.0)
    live = d.get("live") or {}
    seen = live.get("last_seen") or {}
    for m in g.members.values():
        m.last_seen = float(seen.get(m.member_id, 0.0))
    g.pending = {m for m in live.get("pending", []) if m in g.members}
    g.deadline = float(live.get("deadline", 0.0))
    g.offsets = {(str(t), int(p)): int(o) for t, p, o in d.get("offsets", [])}
    return g


def durable_form(record: Record) -> Record:
    """What SQLite keeps of a record (``Group.to_dict``): no offsets, no live times."""
    return {k: v for k, v in record.items() if k not in ("offsets", "live")}


class LocalGroupBackend:
    """Records in memory, durable in ``<data_dir>/groups.db``; one process only.

    A ``put`` claims its revision before it awaits the disk, so two coroutines that read
    the same revision cannot both store; if the disk write fails the record is put back
    (when nothing newer replaced it) and the error propagates."""

    shared = False

    def __init__(self, path: Path, now: float) -> None:
        self.db = GroupStore(path)
        self.on_change: Callable[[str, Versioned | None], None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="groups-db")
        groups, offsets = self.db.load()
        restored = {d["name"]: Group.from_dict(d, now) for d in groups}
        for r in offsets:
            g = restored.setdefault(r["group_name"], Group(r["group_name"]))
            g.offsets[(r["topic"], r["partition"])] = r["offset"]
        self._records = {name: Versioned(live_form(g), 1) for name, g in restored.items()}

    def snapshot(self) -> dict[str, Versioned]:
        return dict(self._records)

    async def get(self, name: str) -> Versioned | None:
        return self._records.get(name)

    async def put(self, record: Record, revision: int, *, membership: bool,
                  commits: Sequence[Commit] = (), member_id: str | None = None) -> int:
        name = record["name"]
        old = self._records.get(name)
        if (old.revision if old is not None else 0) != revision:
            raise GroupConflict(f"group {name!r} changed since revision {revision}")
        new = Versioned(record, revision + 1)
        self._records[name] = new
        try:
            loop = asyncio.get_running_loop()
            if membership:
                await loop.run_in_executor(self._executor, self.db.save_group,
                                           durable_form(record))
            if commits:
                await loop.run_in_executor(self._executor, self.db.commit, name,
                                           record["generation"], member_id, commits)
        except BaseException:
            if self._records.get(name) is new:
                if old is None:
                    del self._records[name]
                else:
                    self._records[name] = old
            raise
        return new.revision

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()


__all__ = ["GroupBackend", "GroupConflict", "GroupStoreError", "LocalGroupBackend",
           "Versioned", "from_live", "live_form"]
