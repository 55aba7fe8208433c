"""The PostgreSQL side of ``bench/mirror.py``: the peer, the server floor, the CPU
meter, and the alternated runs of the three with every run's figures.

Kept apart from ``mirror.py`` (the runner and the other targets) because it is one
comparison with its own machinery: a server of its own, a ``CHECKPOINT`` before each
run, CPU read from /proc before the connections close, and three sides alternated so
that drift in the machine hits all of them. See ``mirror.py``'s docstring for what each
side is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
from psycopg.types.json import Jsonb

from cloud_broker.mirrors.pg_copy import COLUMNS, copy_data
from cloud_broker.mirrors.postgres_target import PostgresTarget
from cloud_broker.storage import PartitionStore
from tests.mirrors.pg_server import PASSWORD, PostgresServer

TOPIC = "bench"


class Cpu:
    """CPU seconds of this process and of a PostgreSQL cluster, between two reads."""

    def __init__(self, pg: PostgresServer | None) -> None:
        self.pg = pg
        self.client = self.server = 0.0
        self._c0 = self._s0 = 0.0

    def _server(self) -> float:
        if self.pg is None or self.pg.proc is None:
            return 0.0
        root = psutil.Process(self.pg.proc.pid)
        total = 0.0
        for proc in [root, *root.children()]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def start(self) -> None:
        self._c0, self._s0 = time.process_time(), self._server()

    def stop(self) -> None:
        self.client = time.process_time() - self._c0
        self.server = self._server() - self._s0


def settle(pg: PostgresServer) -> None:
    """A CHECKPOINT before each run: the dirty pages of the runs before it are written out
    now, not by whichever run comes next (the shared buffers are small; without this the
    later runs of either side paid for the earlier runs' pages)."""
    with pg.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")


async def pg_plain(pg: PostgresServer, store: PartitionStore, table: str, limit: int,
                   per_txn: int, cpu: Cpu | None = None) -> float:
    """psycopg executemany, ``per_txn`` rows per transaction, same table layout and
    indexes."""
    target = PostgresTarget(pg.dsn, table, password=PASSWORD)
    await target.open(TOPIC, 1)  # the same DDL as the mirror's table
    await target.close()
    recs = store.partition(TOPIC, 0).log.read(0, limit, 64 << 20)
    sql = (f'INSERT INTO {table} (topic, partition, "offset", key, time, ts_ms, value, headers)'
           " VALUES (%s, %s, %s, %s, to_timestamp(%s / 1000.0), %s, %s, %s)"
           " ON CONFLICT DO NOTHING")

    def run() -> float:
        with pg.connect() as conn:
            if cpu:
                cpu.start()
            t0 = time.perf_counter()
            for b in range(0, len(recs), per_txn):
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(sql, [
                        (TOPIC, 0, r.offset, r.key.decode(), r.timestamp, r.timestamp,
                         Jsonb(json.loads(r.value)),
                         Jsonb([[n, v.decode()] for n, v in r.headers]))
                        for r in recs[b:b + per_txn]])
            elapsed = time.perf_counter() - t0
            if cpu:
                cpu.stop()
            return elapsed / len(recs)

    return await asyncio.to_thread(run)


async def pg_floor(pg: PostgresServer, store: PartitionStore, table: str, batch: int,
                   connections: int, cpu: Cpu | None = None) -> float:
    """The server's ceiling for the mirror's table: the same rows as the mirror's binary
    COPY data, built before the clock starts, written by ``connections`` threads of
    plain psycopg (partitions dealt round-robin), one transaction per ``batch`` rows and
    no position row. What is left of the client is sending bytes, so this is what
    PostgreSQL itself takes on this machine; the mirror can only come below it."""
    target = PostgresTarget(pg.dsn, table, password=PASSWORD)
    await target.open(TOPIC, 1)
    await target.close()
    pieces: list[list[bytes]] = [[] for _ in range(connections)]
    total = 0
    for part in store.partitions(TOPIC):
        recs = part.log.read(0, part.log.end_offset, 1 << 30)
        total += len(recs)
        pieces[part.index % connections] += [
            copy_data(TOPIC, part.index, recs[b:b + batch], 0, {})
            for b in range(0, len(recs), batch)]
    copy = (f"COPY {table} ({', '.join(chr(34) + c + chr(34) for c in COLUMNS)}) "
            "FROM STDIN (FORMAT BINARY)")
    conns = [pg.connect() for _ in pieces if _]

    def one(conn: Any, chunks: list[bytes]) -> None:
        for data in chunks:
            with conn.transaction(), conn.cursor().copy(copy) as cp:
                cp.write(data)

    try:
        if cpu:
            cpu.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(asyncio.to_thread(one, c, p)
                               for c, p in zip(conns, [p for p in pieces if p], strict=True)))
        elapsed = time.perf_counter() - t0
        if cpu:
            cpu.stop()  # before the connections close: their backends' CPU is counted
    finally:
        for c in conns:
            c.close()
    return total / elapsed


class Comparison:
    """Mirror, peer and server floor, alternated ``repeat`` times; the best rate of each
    and every run's line (rate, CPU per row of this process and of the server)."""

    def __init__(self, pg: PostgresServer) -> None:
        self.pg = pg
        self.lines: list[str] = []
        self.cpu: dict[str, list[float]] = {"mirror": [], "peer": [], "floor": []}

    async def _run(self, side: str, label: str, rows: int,
                   go: Callable[[Cpu], Awaitable[float]],
                   extra: Callable[[], str] = lambda: "") -> float:
        await asyncio.to_thread(settle, self.pg)
        cpu = Cpu(self.pg)
        rate = await go(cpu)
        self.cpu[side].append(1e6 * (cpu.client + cpu.server) / rows)
        self.lines.append(f"  {label:<16}{rate:9,.0f} rows/s, CPU per row: client "
                          f"{1e6 * cpu.client / rows:.2f} us + server "
                          f"{1e6 * cpu.server / rows:.2f} us;{extra()} load "
                          f"{os.getloadavg()[0]:.1f}")
        return rate

    async def run(self, repeat: int, store: PartitionStore, total: int, peer_n: int,
                  batch: int, connections: int,
                  mirror: Callable[[int, Cpu, list[float]], Awaitable[float]]
                  ) -> tuple[float, float, float]:
        """(mirror, peer, floor) best rows/s; ``mirror(i, cpu, first)`` runs the real
        mirror and appends to ``first`` the seconds until it had started copying."""
        best = {"mirror": 0.0, "peer": 0.0, "floor": 0.0}
        for i in range(repeat):
            first: list[float] = []
            rate = await self._run(
                "mirror", f"mirror run {i}:", total,
                lambda cpu, i=i, first=first: mirror(i, cpu, first),
                lambda first=first: f" startup {1000 * first[0]:.0f} ms;" if first else "")
            best["mirror"] = max(best["mirror"], rate)
            best["peer"] = max(best["peer"], await self._run(
                "peer", f"peer run {i}:", peer_n,
                lambda cpu, i=i: _inverse(pg_plain(self.pg, store, f"peer{i}", peer_n,
                                                   batch, cpu))))
            best["floor"] = max(best["floor"], await self._run(
                "floor", f"server floor {i}:", total,
                lambda cpu, i=i: pg_floor(self.pg, store, f"floor{i}", batch, connections,
                                          cpu)))
        return best["mirror"], best["peer"], best["floor"]

    def report(self, connections: int) -> None:
        m, p, f = (min(self.cpu[k]) for k in ("mirror", "peer", "floor"))
        print(f"\nPostgreSQL, every run ({connections} connections, {os.cpu_count()} cores):")
        print("\n".join(self.lines))
        print(f"  CPU per row, best: mirror {m:.2f} us, peer {p:.2f} us: peer / mirror = "
              f"{p / m:.1f}x; all-cores ceiling of the mirror "
              f"{(os.cpu_count() or 1) * 1e6 / m:,.0f} rows/s; server floor {f:.2f} us "
              f"(peer / floor = {p / f:.1f}x)")


async def _inverse(seconds_per_row: Awaitable[float]) -> float:
    return 1 / await seconds_per_row
