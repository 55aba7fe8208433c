"""SQL target: one row per record in a SQLite table, written with sqlite-utils.

Strategy: the primary key is (topic, partition, offset) and every batch is one upsert in
one transaction, so a replayed batch rewrites the same rows and nothing is duplicated;
``next_offset`` is max(offset) + 1 of the partition. Rows are meant for people and for
datasette-style tools, so text stays text: the key and the value are stored as TEXT when
they are UTF-8 (BLOB otherwise), the timestamp both as epoch ms and ISO-8601, and a value
that is a JSON object also gets one ``value_<field>`` column per top-level field (added on
first sight; capped so a hostile payload cannot explode the schema). Headers are a JSON
object of name -> text.

Table (``table`` option, default ``records``)::

    topic TEXT, partition INTEGER, offset INTEGER, key TEXT|BLOB, timestamp INTEGER,
    time TEXT, headers TEXT (JSON), value TEXT|BLOB, value_<field>... ; pk (topic,
    partition, offset)

Concurrency: one connection, used by one worker thread at a time under a lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from shared_log import StoredRecord

from .target import TargetRejected, TargetUnavailable

PK = ("topic", "partition", "offset")
MAX_JSON_COLUMNS = 64
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _text_or_bytes(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def record_row(topic: str, partition: int, rec: StoredRecord, json_columns: bool,
               known: set[str]) -> dict[str, Any]:
    """The row of one record; ``known`` is the set of value_ columns already present."""
    value = _text_or_bytes(rec.value)
    row: dict[str, Any] = {
        "topic": topic, "partition": partition, "offset": rec.offset,
        "key": _text_or_bytes(rec.key), "timestamp": rec.timestamp,
        "time": dt.datetime.fromtimestamp(rec.timestamp / 1000, dt.UTC).isoformat(
            timespec="milliseconds"),
        "headers": json.dumps({n: v.decode("utf-8", "replace") for n, v in rec.headers}),
        "value": value,
    }
    if json_columns and isinstance(value, str) and value[:1] == "{":
        try:
            doc = json.loads(value)
        except ValueError:
            return row
        if isinstance(doc, dict):
            for k, v in doc.items():
                col = f"value_{k}"
                if not (isinstance(k, str) and _FIELD.match(k)):
                    continue
                if col not in known and len(known) >= MAX_JSON_COLUMNS:
                    continue
                known.add(col)
                row[col] = json.dumps(v) if isinstance(v, dict | list) else v
    return row


class SqlTarget:
    """Records of one topic into a SQLite table; see the module docstring."""

    def __init__(self, path: str | Path, table: str = "records", json_columns: bool = True,
                 timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.table_name = table
        self.json_columns = json_columns
        self.description = f"sqlite {self.path} table {table}"
        self._db: sqlite_utils.Database | None = None
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._topic = ""

    async def open(self, topic: str, partitions: int) -> None:
        self._topic = topic
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
                db = sqlite_utils.Database(conn)
                db[self.table_name].create(
                    {"topic": str, "partition": int, "offset": int, "key": str,
                     "timestamp": int, "time": str, "headers": str, "value": str},
                    pk=PK, if_not_exists=True)
            except (sqlite3.Error, OSError) as exc:
                raise TargetUnavailable(f"cannot open {self.path}: {exc}") from exc
            self._known = {c for c in db[self.table_name].columns_dict if c.startswith("value_")}
            self._db = db

    async def write(self, partition: int, records: Sequence[StoredRecord]) -> None:
        await asyncio.to_thread(self._write, partition, records)

    def _write(self, partition: int, records: Sequence[StoredRecord]) -> None:
        self._open()
        with self._lock:
            db = self._db
            assert db is not None
            known = set(self._known)
            rows = [record_row(self._topic, partition, r, self.json_columns, known)
                    for r in records]
            try:
                with db.conn:
                    db.execute("BEGIN IMMEDIATE")
                    db[self.table_name].upsert_all(rows, pk=PK, alter=True, batch_size=500)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "disk" in str(exc) or "I/O" in str(exc):
                    raise TargetUnavailable(f"{self.path}: {exc}") from exc
                raise TargetRejected(f"{self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise TargetRejected(f"{self.path}: {exc}") from exc
            except OSError as exc:
                raise TargetUnavailable(f"{self.path}: {exc}") from exc
            self._known = known

    async def next_offset(self, partition: int) -> int | None:
        return await asyncio.to_thread(self._next_offset, partition)

    def _next_offset(self, partition: int) -> int | None:
        self._open()
        with self._lock:
            assert self._db is not None
            try:
                row = self._db.execute(
                    f"select max(offset) from [{self.table_name}] "
                    "where topic = ? and partition = ?", [self._topic, partition]).fetchone()
            except sqlite3.Error as exc:
                raise TargetUnavailable(f"{self.path}: {exc}") from exc
        # No rows: either never written or pruned by someone; the checkpoint decides.
        return None if row[0] is None else row[0] + 1

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.conn.close()
                self._db = None
