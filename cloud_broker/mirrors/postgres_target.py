"""PostgreSQL target: every record one row, exactly once, with the mirror's position in
the same transaction.

Strategy: a batch is one transaction on the partition's own connection, in four round
trips (COPY takes two)::

    BEGIN; SELECT next_offset ... FOR UPDATE;               pipelined, one round trip
    INSERT INTO edgestream_positions ... ON CONFLICT DO UPDATE (GREATEST: never back)
    COPY <table> FROM STDIN (FORMAT BINARY)       records at or past the old position
    COMMIT

The position row lock serialises writers, and rows past the position cannot exist when
every writer commits its rows with the position: so the rows go straight into the table
with COPY, each value parsed into jsonb once, no staging table and no merge. The primary
key stays the backstop. Should rows be there anyway (written by hand, the position row
deleted), the key refuses the COPY, the transaction rolls back, and the batch is written
again the slow way: COPY into a temporary staging table and ``INSERT ... SELECT ... ON
CONFLICT ON CONSTRAINT <primary key> DO NOTHING`` (see ``merged_batches``; a row another
unique constraint refuses fails the batch, never skipped in silence). Rows and position
commit together or not at all, so the target always knows exactly where it is
(``next_offset`` reads the position row): a replayed batch inserts nothing, and rows
removed later for retention are not written again.

The runner copies partitions concurrently, so the target keeps a pool (``pg_pool``) of
at most ``connections`` connections (one transaction each at a time): partitions on separate
connections run on separate server backends (the server's jsonb and index work spreads
over its cores while the mirror builds the next COPY data). Which connection writes a
batch does not matter for exactly once (the position row lock and the one transaction
do that). More partitions than connections wait their turn, in order: the bound keeps a
topic of many partitions from taking a backend each.

psycopg 3 rather than asyncpg: its ``AsyncConnection`` pipelines statements and takes
binary COPY data as it is (``pg_copy``, or ``pg_stored`` from a local read's stored
batches: ``takes_stored``), libpq brings every connection option (sslmode, certificates,
PGPASSWORD, ~/.pgpass, service files), and its errors carry SQLSTATE classes we map.

Table (``table`` option, default ``records``)::

    topic text, partition int, "offset" bigint, key text, key_bytes bytea,
    time timestamptz, ts_ms bigint, value jsonb, value_bytes bytea, headers jsonb,
    <fields>...;  primary key (partition, "offset", topic) [+ time on a hypertable];
    index (key, time)

With TimescaleDB installed in the database (``CREATE EXTENSION timescaledb``) a new table
becomes a hypertable on ``time`` (``hypertable = false`` keeps a plain table).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from shared_log import StoredRecord

from .pg_copy import COLUMNS, copy_chunks
from .pg_pool import INERROR, PgPool, refused_content, where
from .pg_rows import BYTES, FAST, FIELD_TYPES, MODES
from .pg_stored import stored_chunks
from .settings import PG_CONNECTIONS as CONNECTIONS
from .stored import StoredRecords, span
from .target import TargetRejected

log = logging.getLogger(__name__)
POSITIONS = "edgestream_positions"
STAGE = "edgestream_stage"
COLUMN_TYPES = ("text", "int", "bigint", "text", "bytea", "timestamptz", "bigint", "jsonb",
                "bytea", "jsonb")
#: TimescaleDB is installed in the database: its function is there to call
TIMESCALE_PRESENT = ("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb' UNION ALL "
                     "SELECT 1 FROM pg_proc WHERE proname = 'create_hypertable' LIMIT 1")
class PostgresTarget(PgPool):
    """Records of one topic into a PostgreSQL table; see the module docstring."""

    def __init__(self, conninfo: str, table: str = "records", *,
                 password: str | None = None, password_env: str | None = None,
                 connect_kwargs: Mapping[str, Any] | None = None,
                 fields: Mapping[str, str] | None = None, hypertable: bool = True,
                 timeout_s: float = 10.0, connections: int = CONNECTIONS) -> None:
        super().__init__(conninfo, f"postgresql {where(conninfo)} table {table}",
                         password=password, password_env=password_env,
                         connect_kwargs=connect_kwargs, timeout_s=timeout_s,
                         connections=connections)
        self.table = table
        self.fields = dict(fields or {})
        self.hypertable = hypertable
        self._topic = ""
        self._sql: dict[str, sql.Composed] = {}
        #: batches the primary key refused (rows already past the position), merged instead
        self.merged_batches = 0

    def _columns(self) -> list[tuple[str, str]]:
        """(name, type) of every column the target writes, in COPY order."""
        return [*zip(COLUMNS, COLUMN_TYPES, strict=True),
                *((n, FIELD_TYPES[k]) for n, k in self.fields.items())]

    @property
    def takes_stored(self) -> bool:
        """Local reads may hand over stored batches (``stored.py``): without typed fields
        the COPY rows are built from them directly (``pg_stored``)."""
        return not self.fields

    # -- the Target interface -------------------------------------------------------------

    async def open(self, topic: str, partitions: int) -> None:
        """Create the table; meanwhile open the connections the partitions will use (as
        many as there are partitions, up to ``connections``), so the mirror's start waits
        for the slower of the two, not for both."""
        self._topic = topic
        warm = [asyncio.create_task(self._warm())
                for _ in range(min(partitions, self.connections) - len(self._open) - 1)]
        try:
            await self._guarded("create table", self._create)  # the connection stays pooled
        except BaseException:
            for t in warm:
                t.cancel()
            raise
        finally:
            await asyncio.gather(*warm, return_exceptions=True)

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        t = sql.Identifier(self.table)
        extra = sql.SQL("").join(sql.SQL(", {} {}").format(sql.Identifier(n),
                                                          sql.SQL(FIELD_TYPES[k]))
                                 for n, k in self.fields.items())
        async with conn.transaction():
            # One creator at a time (two mirrors sharing a database start together).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.table])
            enc = await (await conn.execute("SHOW server_encoding")).fetchone()
            if enc is None or enc[0].upper() not in ("UTF8", "UTF-8"):
                raise TargetRejected(f"{self.description}: the database encoding must be "
                                     f"UTF8 (jsonb and text), not {enc and enc[0]}")
            await conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (topic text NOT NULL, partition int NOT NULL, "
                "relation text NOT NULL, next_offset bigint NOT NULL, "
                "updated_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (relation, topic, partition))").format(sql.Identifier(POSITIONS)))
            exists = await (await conn.execute("SELECT to_regclass(%s)",
                                               [self.table])).fetchone()
            timescale = self.hypertable and exists is not None and exists[0] is None and bool(
                await (await conn.execute(TIMESCALE_PRESENT)).fetchone())
            # The key's fixed-width columns first: its comparisons are decided by partition
            # and offset without reading the text (~10% of the server's work per row).
            pk = sql.SQL(', time' if timescale else '')
            await conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (topic text NOT NULL, partition int NOT NULL, "
                "\"offset\" bigint NOT NULL, key text, key_bytes bytea, "
                "time timestamptz NOT NULL, ts_ms bigint NOT NULL, value jsonb, "
                "value_bytes bytea, headers jsonb{}, "
                "PRIMARY KEY (partition, \"offset\", topic{}))").format(t, extra, pk))
            for n, k in self.fields.items():  # a field added to the config later
                await conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}")
                                   .format(t, sql.Identifier(n), sql.SQL(FIELD_TYPES[k])))
            await conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (key, time)")
                               .format(sql.Identifier(f"{self.table}_key_time"), t))
            if timescale:
                await conn.execute("SELECT create_hypertable(%s, 'time', "
                                   "if_not_exists => true)", [self.table])
                log.info("%s: created as a TimescaleDB hypertable", self.description)

    async def write(self, partition: int, records: Sequence[StoredRecord]) -> None:
        merge = False
        for mode in MODES:
            if mode != FAST and isinstance(records, StoredRecords):
                # Values judged here, record by record: objects, decoded off the loop.
                records = await asyncio.to_thread(records.decoded)
            try:
                try:
                    await self._guarded("write", lambda c, m=mode, g=merge, r=records:
                                        self._write(c, partition, r, m, g))
                except psycopg.errors.UniqueViolation:
                    if merge:
                        raise
                    # Rows beyond the position (written by hand, or the position row was
                    # deleted): the same batch again, merged, skipping what is there.
                    merge = True
                    self.merged_batches += 1
                    log.info("%s partition %d: rows from offset %d are already in the "
                             "table past its position; merging the batch", self.description,
                             partition, span(records)[0])
                    await self._guarded("write", lambda c, m=mode, r=records:
                                        self._write(c, partition, r, m, True))
                return
            except psycopg.errors.UniqueViolation as exc:
                # Not our primary key (ON CONFLICT DO NOTHING covers it): another unique
                # constraint someone added to the table.
                raise TargetRejected(f"{self.description}: {exc}") from exc
            except psycopg.DatabaseError as exc:
                if not refused_content(exc):
                    raise
                # A value the server refused: never stall on it, judge the batch's values
                # more strictly here and write it again (pg_rows.MODES).
                log.warning("%s partition %d: the server refused a value in the batch from "
                            "offset %d (%s); writing it again, values judged %s",
                            self.description, partition, span(records)[0],
                            str(exc).splitlines()[0][:200], "after" if mode == BYTES else
                            MODES[MODES.index(mode) + 1])
                if mode == BYTES:
                    raise TargetRejected(f"{self.description}: {exc}") from exc

    async def _write(self, conn: psycopg.AsyncConnection[Any], partition: int,
                     records: Sequence[StoredRecord], mode: str, merge: bool) -> None:
        """One transaction: lock the position and move it (pipelined), COPY the records
        at or past the old position straight into the table, or with ``merge`` into the
        staging table and from there with ON CONFLICT DO NOTHING; commit. A statement
        error rolls back here, so the connection stays usable."""
        topic, q = self._topic, self._statements()
        last = span(records)[1]
        stored = isinstance(records, StoredRecords) and mode == FAST and not self.fields
        try:
            async with conn.pipeline():
                await conn.execute(b"BEGIN")
                cur = await conn.execute(q["lock"], [self.table, topic, partition])
                await conn.execute(q["position"], [self.table, topic, partition, last + 1])
            row = await cur.fetchone()
            position = row[0] if row else 0
            if last >= position:  # else a replay of rows already committed
                if merge:
                    await conn.execute(q["stage"])
                async with conn.cursor().copy(q["stage_copy" if merge else "copy"]) as cp:
                    for data in (stored_chunks(topic, partition, records.batches, position)
                                 if stored else copy_chunks(topic, partition, records, position,
                                                            self.fields, mode)):
                        await cp.write(data)
                        await asyncio.sleep(0)  # the broker's loop runs between pieces
                if merge:
                    await conn.execute(await self._merge_statement(conn))
            await conn.execute(b"COMMIT")
        except psycopg.Error:
            if not conn.closed and conn.info.transaction_status == INERROR:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(b"ROLLBACK")
            raise

    def _statements(self) -> dict[str, sql.Composed]:
        if self._sql:
            return self._sql
        p, t, st = sql.Identifier(POSITIONS), sql.Identifier(self.table), sql.Identifier(STAGE)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n, _ in self._columns())
        self._sql = {
            "lock": sql.SQL("SELECT next_offset FROM {} WHERE relation = %s AND topic = %s "
                            "AND partition = %s FOR UPDATE").format(p),
            "position": sql.SQL(
                "INSERT INTO {p} (relation, topic, partition, next_offset) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (relation, topic, partition) DO UPDATE "
                "SET next_offset = GREATEST({p}.next_offset, EXCLUDED.next_offset), "
                "updated_at = now()").format(p=p),
            "copy": sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(t, cols),
            # The slow way, only for a batch the primary key refused.
            "stage": sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
                             ).format(st, sql.SQL(", ").join(
                                 sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(k))
                                 for n, k in self._columns())),
            "stage_copy": sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(st, cols),
        }
        return self._sql

    async def _merge_statement(self, conn: psycopg.AsyncConnection[Any]) -> sql.Composed:
        """The slow way's INSERT, skipping rows by the table's primary key only: a row
        another unique constraint refuses (one added by hand) fails the batch, it is
        never dropped in silence. No primary key: rejected, nothing could be skipped."""
        row = await (await conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) "
            "AND contype = 'p'", [self.table])).fetchone()
        if row is None:
            raise TargetRejected(f"{self.description}: the table has no primary key, so "
                                 "rows already there cannot be told apart")
        cols = sql.SQL(", ").join(sql.Identifier(n) for n, _ in self._columns())
        return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ON CONSTRAINT {} "
                       "DO NOTHING").format(sql.Identifier(self.table), cols, cols,
                                            sql.Identifier(STAGE), sql.Identifier(row[0]))

    async def next_offset(self, partition: int) -> int | None:
        async def ask(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                row = await (await conn.execute(
                    sql.SQL("SELECT next_offset FROM {} WHERE relation = %s AND topic = %s "
                            "AND partition = %s").format(sql.Identifier(POSITIONS)),
                    [self.table, self._topic, partition])).fetchone()
                if row is not None:
                    return int(row[0])
                # No position row: rows written by hand or an older layout tell, else none.
                top = await (await conn.execute(
                    sql.SQL("SELECT max(\"offset\") FROM {} WHERE topic = %s AND "
                            "partition = %s").format(sql.Identifier(self.table)),
                    [self._topic, partition])).fetchone()
                return 0 if top is None or top[0] is None else int(top[0]) + 1
        return await self._guarded("read position", ask)
