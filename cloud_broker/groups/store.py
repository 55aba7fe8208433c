"""Consumer group state in SQLite (``<data_dir>/groups.db``) through sqlite-utils.

Strategy: a thin persistence layer under the pure ``groups`` module. Two tables:

    groups   name (pk), generation, assignor, state (JSON of Group.to_dict), updated_at
    offsets  (group_name, topic, partition) pk, offset, generation, member_id, committed_at

WAL journal with ``synchronous=FULL``: a commit the broker acknowledged survives a crash
(G6: consumers resume from committed offsets). Every method is blocking; the coordinator
calls them from its single database thread, so one connection is used by one thread at a
time. sqlite3 errors become ``GroupStoreError``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlite_utils


class GroupStoreError(Exception):
    """The group database could not be read or written."""


class GroupStore:
    def __init__(self, path: Path) -> None:
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self.db = sqlite_utils.Database(conn)
            self.db["groups"].create(
                {"name": str, "generation": int, "assignor": str, "state": str,
                 "updated_at": float}, pk="name", if_not_exists=True)
            self.db["offsets"].create(
                {"group_name": str, "topic": str, "partition": int, "offset": int,
                 "generation": int, "member_id": str, "committed_at": float},
                pk=("group_name", "topic", "partition"), if_not_exists=True)
        except sqlite3.Error as exc:
            raise GroupStoreError(f"cannot open {path}: {exc}") from exc

    def load(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every saved group (as Group.to_dict) and every committed offset row."""
        try:
            groups = [json.loads(r["state"]) for r in self.db["groups"].rows]
            offsets = list(self.db["offsets"].rows)
        except (sqlite3.Error, ValueError) as exc:
            raise GroupStoreError(f"cannot read group state: {exc}") from exc
        return groups, offsets

    def save_group(self, state: dict[str, Any]) -> None:
        row = {"name": state["name"], "generation": state["generation"],
               "assignor": state["assignor"], "state": json.dumps(state),
               "updated_at": time.time()}
        try:
            self.db["groups"].upsert(row, pk="name")
        except sqlite3.Error as exc:
            raise GroupStoreError(f"cannot save group {state['name']!r}: {exc}") from exc

    def commit(self, group: str, generation: int, member_id: str | None,
               offsets: Iterable[tuple[str, int, int]]) -> None:
        """Store (topic, partition, offset) rows in one transaction."""
        now = time.time()
        rows = [{"group_name": group, "topic": t, "partition": p, "offset": o,
                 "generation": generation, "member_id": member_id or "", "committed_at": now}
                for t, p, o in offsets]
        try:
            with self.db.conn:
                self.db["offsets"].upsert_all(rows, pk=("group_name", "topic", "partition"))
        except sqlite3.Error as exc:
            raise GroupStoreError(f"cannot commit offsets of {group!r}: {exc}") from exc

    def close(self) -> None:
        self.db.close()
