"""Helpers for the mirror tests: a source to fill, and one kit per target (imported by
name: pytest puts this directory on sys.path).

Strategy: the conformance suite asks every target the same questions, so each target
gets a small kit with the same five operations: the ``[mirrors.<name>]`` table that
points at it, a Target object for in-process runs, ``read`` (everything the target holds
for a partition, as plain tuples so comparisons are byte for byte), and ``down``/``up``
(SIGKILL and restart the real server, or lock the SQLite file). Record contents are a
pure function of (partition, index), so any test can check what a target holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pg_server import PASSWORD as PG_PASSWORD
from pg_server import PostgresServer

from cloud_broker.config import TopicConfig
from cloud_broker.mirrors import CheckpointStore, MirrorConfig, Target, build_target, parse_mirror
from cloud_broker.mirrors.nats_target import record_from_message
from cloud_broker.mirrors.pg_rows import record_of
from cloud_broker.storage import PartitionStore
from shared_log import Log, Record
from tests.helpers import REPO, broker_server, nats_server, wait_for

TOPIC = "telemetry"
PARTITIONS = 3
ADMIN = "admin-token-0001"
Row = tuple[int, bytes, bytes, int, tuple[tuple[str, bytes], ...]]


def record(partition: int, i: int) -> Record:
    """A record of the source; some binary, some JSON, some with headers."""
    if i % 7 == 3:
        key, value = b"\x00\xff bin-%d" % i, bytes(range(i % 50)) + b"\r\n"
    else:
        key = b"dev-%04d" % (i % 97)
        value = json.dumps({"d": i % 97, "seq": i, "p": partition, "temp": 20 + i % 9,
                            "tags": {"site": "x"}}).encode()
    headers = (("origin", b"gw/s/g/%d" % i),) if i % 2 else ()
    return Record(key, value, 1_700_000_000_000 + i, headers)


def fill_source(store: PartitionStore, n_per_partition: int, start: int = 0,
                batch: int = 100) -> None:
    """Append records [start, start + n) to every partition (the caller flushes)."""
    for part in store.partitions(TOPIC):
        for b in range(start, start + n_per_partition, batch):
            part.log.append([record(part.index, i)
                             for i in range(b, min(b + batch, start + n_per_partition))])
        part.log.flush()
        part.notify()


def open_source(data_dir: Path, partitions: int = PARTITIONS) -> PartitionStore:
    store = PartitionStore(data_dir, commit_interval_ms=1.0)
    store.ensure_topic(TopicConfig(TOPIC, partitions))
    return store


def rows_of(records: list[Any]) -> list[Row]:
    return [(r.offset, bytes(r.key), bytes(r.value), r.timestamp,
             tuple((n, bytes(v)) for n, v in r.headers)) for r in records]


def read_log(directory: Path) -> list[Row]:
    """Everything in a log directory, opened read-only."""
    log = Log(directory, read_only=True)
    try:
        out: list[Row] = []
        off = log.start_offset
        while off < log.end_offset:
            res = log.fetch(off, 5000, 8 << 20)
            out.extend(rows_of(res.records))
            if res.next_offset <= off:
                break
            off = res.next_offset
        return out
    finally:
        log.close()


def source_rows(data_dir: Path, partition: int) -> list[Row]:
    return read_log(data_dir / "topics" / TOPIC / str(partition))


# -- target kits ---------------------------------------------------------------------------


class Kit:
    kind = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def table(self, name: str = "m", **extra: Any) -> dict[str, Any]:
        """The mirror definition (a [mirrors.<name>] table as a dict)."""
        raise NotImplementedError

    def config(self, name: str = "m", **extra: Any) -> MirrorConfig:
        return parse_mirror(name, self.table(**extra), self.tmp)

    def target(self, **extra: Any) -> Target:
        return build_target(self.config(**extra))

    def read(self, partition: int) -> list[Row]:
        raise NotImplementedError

    def normalize(self, rows: list[Row]) -> list[Row]:
        """Source rows as this target gives them back (byte for byte: unchanged)."""
        return rows

    def down(self) -> None:
        raise NotImplementedError

    def up(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class BrokerKit(Kit):
    kind = "broker"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.server = broker_server(tmp / "target-broker", topics={TOPIC: PARTITIONS},
                                    tokens=[{"token": ADMIN, "permissions": ["admin"]}]).start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def table(self, name: str = "m", **extra: Any) -> dict[str, Any]:
        return {"topic": TOPIC, "target": "broker", "url": self.url, "token": ADMIN,
                "timeout_s": 3, **extra}

    def read(self, partition: int) -> list[Row]:
        return read_log(self.tmp / "target-broker" / "data" / "topics" / TOPIC / str(partition))

    def down(self) -> None:
        self.server.kill()

    def up(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.kill()


class NatsKit(Kit):
    kind = "nats"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.server = nats_server(tmp / "nats").start()
        self.url = f"nats://127.0.0.1:{self.server.port}"

    def table(self, name: str = "m", **extra: Any) -> dict[str, Any]:
        return {"topic": TOPIC, "target": "nats", "servers": [self.url], "stream": "MIRROR",
                "subject_prefix": "es", "timeout_s": 3, **extra}

    def messages(self, partition: int) -> list[tuple[int, dict[str, str], bytes]]:
        """(stream sequence, headers, data) of every message of the partition's subject."""
        return asyncio.run(nats_messages(self.url, "MIRROR", f"es.{TOPIC}.{partition}"))

    def read(self, partition: int) -> list[Row]:
        return rows_of([record_from_message(h, d) for _seq, h, d in self.messages(partition)])

    def down(self) -> None:
        self.server.kill()

    def up(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.kill()


async def nats_messages(url: str, stream: str, subject: str
                        ) -> list[tuple[int, dict[str, str], bytes]]:
    """Every message of ``subject`` in stream order, through an ephemeral pull consumer."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream, subjects_filter=subject)
        total = (info.state.subjects or {}).get(subject, 0)
        sub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE))
        out: list[tuple[int, dict[str, str], bytes]] = []
        while len(out) < total:
            for m in await sub.fetch(min(1000, total - len(out)), timeout=5):
                out.append((m.metadata.sequence.stream, dict(m.headers or {}), m.data))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


class SqlKit(Kit):
    kind = "sql"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.path = tmp / "mirror.db"
        self._locker: sqlite3.Connection | None = None

    def table(self, name: str = "m", **extra: Any) -> dict[str, Any]:
        return {"topic": TOPIC, "target": "sql", "path": str(self.path), "table": "records",
                **extra}

    def read(self, partition: int) -> list[Row]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(self.path, timeout=30)
        try:
            rows = db.execute("select offset, key, value, timestamp, headers from records "
                              "where topic = ? and partition = ? order by offset",
                              [TOPIC, partition]).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

        def b(v: str | bytes) -> bytes:
            return v.encode() if isinstance(v, str) else v

        return [(o, b(k), b(v), ts, tuple((n, x.encode()) for n, x in json.loads(h).items()))
                for o, k, v, ts, h in rows]

    def down(self) -> None:
        """An exclusive lock from another connection: every write fails as 'locked'."""
        self._locker = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
        self._locker.execute("BEGIN EXCLUSIVE")

    def up(self) -> None:
        if self._locker is not None:
            self._locker.execute("ROLLBACK")
            self._locker.close()
            self._locker = None

    def close(self) -> None:
        self.up()


class PostgresKit(Kit):
    """A PostgreSQL of its own; JSON values come back in jsonb's normal form."""

    kind = "postgres"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.server = PostgresServer().start()

    def table(self, name: str = "m", **extra: Any) -> dict[str, Any]:
        return {"topic": TOPIC, "target": "postgres", "dsn": self.server.dsn,
                "password": PG_PASSWORD, "table": "readings", "timeout_s": 3, **extra}

    def read(self, partition: int) -> list[Row]:
        import psycopg
        from psycopg.rows import dict_row
        try:
            with self.server.connect(row_factory=dict_row) as conn:
                rows = conn.execute('select * from readings where topic = %s and '
                                    'partition = %s order by "offset"',
                                    [TOPIC, partition]).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        return [record_of(r) for r in rows]

    def normalize(self, rows: list[Row]) -> list[Row]:
        out = []
        for o, k, v, ts, h in rows:
            with contextlib.suppress(ValueError):
                v = json.dumps(json.loads(v.decode()), sort_keys=True).encode()
            out.append((o, k, v, ts, h))
        return out

    def down(self) -> None:
        self.server.kill()

    def up(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()


class SharedPostgresKit(PostgresKit):
    """PostgreSQL with fewer connections than partitions: partitions take turns on the
    connections of the pool, so a batch of any partition may go over any of them."""

    kind = "postgres-shared"

    def table(self, name: str = "m", **extra: Any) -> dict[str, Any]:
        return super().table(name, **{"connections": PARTITIONS - 1, **extra})


KITS = {"broker": BrokerKit, "nats": NatsKit, "postgres": PostgresKit,
        "postgres-shared": SharedPostgresKit, "sql": SqlKit}


# -- running mirrors -----------------------------------------------------------------------


def write_script_config(tmp: Path, table: dict[str, Any], name: str = "m",
                        partitions: int = PARTITIONS) -> Path:
    """A cloud.toml for tests/mirrors/mirror_script.py: source data_dir, topic, one mirror."""
    def val(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str | bool) else str(v)

    lines = [f'data_dir = "{tmp / "source"}"', f"[topics.{TOPIC}]",
             f"partitions = {partitions}", f"[mirrors.{name}]"]
    lines += [f"{k} = {val(v)}" for k, v in table.items()]
    path = tmp / "mirror.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_script(config: Path, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "mirrors" / "mirror_script.py"),
             "--config", str(config), *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def checkpoints(data_dir: Path, mirror: str = "m") -> dict[int, int]:
    store = CheckpointStore(data_dir / "mirrors.db")
    try:
        return store.load(mirror)
    finally:
        store.close()


def wait_copied(kit: Kit, expected: dict[int, list[Row]], timeout: float = 60.0) -> None:
    def done() -> bool:
        return all(len(kit.read(p)) >= len(rows) for p, rows in expected.items())
    wait_for(done, timeout=timeout, interval=0.25, message=f"{kit.kind} to hold every record")


def http_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=5).json()
