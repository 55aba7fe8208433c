"""Mirror checkpoints and admin-defined mirrors in ``<data_dir>/mirrors.db`` (sqlite-utils).

Strategy: a checkpoint is the next source offset a mirror will copy for one partition,
written after each batch the target acknowledged. It is a hint, not the truth: on start
the runner asks the target where it stands and only falls back to the checkpoint when the
target cannot tell, so a checkpoint that lags (crash between write and checkpoint) costs
nothing. Hence WAL with ``synchronous=NORMAL``: a power cut may lose the last checkpoints,
never corrupt the file.

Tables::

    checkpoints(mirror, topic, partition, next_offset, updated_at)  pk (mirror, partition)
    mirrors(name, definition)   mirrors added through POST /v1/mirrors (JSON definition)

Concurrency: one connection shared by threads under a lock; callers on an event loop use
the ``a*`` coroutines, which run the SQL in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlite_utils

DB_NAME = "mirrors.db"


class CheckpointStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.Lock()
        self.db["checkpoints"].create(
            {"mirror": str, "topic": str, "partition": int, "next_offset": int,
             "updated_at": float}, pk=("mirror", "partition"), if_not_exists=True)
        self.db["mirrors"].create({"name": str, "definition": str}, pk="name",
                                  if_not_exists=True)

    # -- checkpoints ---------------------------------------------------------------------

    def load(self, mirror: str) -> dict[int, int]:
        """{partition: next_offset} of one mirror."""
        with self._lock:
            rows = self.db.query(
                "select partition, next_offset from checkpoints where mirror = ?", [mirror])
            return {r["partition"]: r["next_offset"] for r in rows}

    def save(self, mirror: str, topic: str, partition: int, next_offset: int) -> None:
        with self._lock:
            self.db["checkpoints"].upsert(
                {"mirror": mirror, "topic": topic, "partition": partition,
                 "next_offset": next_offset, "updated_at": time.time()},
                pk=("mirror", "partition"))

    async def aload(self, mirror: str) -> dict[int, int]:
        return await asyncio.to_thread(self.load, mirror)

    async def asave(self, mirror: str, topic: str, partition: int, next_offset: int) -> None:
        await asyncio.to_thread(self.save, mirror, topic, partition, next_offset)

    def forget(self, mirror: str) -> None:
        """Drop a mirror's checkpoints (it was deleted; a new one of that name starts over)."""
        with self._lock:
            self.db["checkpoints"].delete_where("mirror = ?", [mirror])

    # -- admin-defined mirrors -----------------------------------------------------------

    def definitions(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {r["name"]: json.loads(r["definition"])
                    for r in self.db.query("select name, definition from mirrors")}

    def put_definition(self, name: str, definition: dict[str, Any]) -> None:
        with self._lock:
            self.db["mirrors"].upsert(
                {"name": name, "definition": json.dumps(definition, sort_keys=True)}, pk="name")

    def delete_definition(self, name: str) -> None:
        with self._lock:
            self.db["mirrors"].delete_where("name = ?", [name])

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
