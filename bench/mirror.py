"""Mirror throughput per target, against the plain client of each target in the same run.

Run from the repository root::

    .venv/bin/python bench/mirror.py            # full run, ~1 minute on 2 cores
    .venv/bin/python bench/mirror.py --quick    # smoke run, a few seconds

Strategy: one source (a PartitionStore with P partitions of N records each, 100-byte JSON
values, pre-filled and flushed) is mirrored from offset 0 by the real runner
(MirrorManager + LocalSource, as inside the broker) into a fresh destination each time:
a new JetStream stream on a real ``nats-server -js``, a new topic of a real second broker
(``cloud-broker serve`` subprocess), a new SQLite file. The clock runs from start until
every partition's position equals its end offset. Peers, same records, same run:

* JetStream: nats-py ``js.publish`` one message at a time, each awaiting its ack (the
  obvious way to write a stream from Python), and ``publish_async`` pipelined in windows
  of 1000 (what the mirror does underneath, without the mirror).
* SQL: sqlite-utils ``upsert_all`` of the same rows in one transaction per 1000.
* PostgreSQL (a server of its own, ``initdb`` in a temp dir, fsync on): psycopg
  ``executemany`` (which pipelines its statements) of ``INSERT ... ON CONFLICT DO
  NOTHING`` into a table of the same layout and indexes on the same server, one
  transaction per ``--pg-batch`` rows like the mirror's batches (values as ``Jsonb``,
  headers as JSON). The mirror uses the postgres target's default batch (5000 records)
  and connections (4: ``--pg-connections``), the peer one connection. A third run
  gives the ceiling: the mirror's own COPY data for every record, built before the clock
  starts, written by plain psycopg on as many connections (``mirror_pg.pg_floor``): what the
  server takes for this table when the client does nothing but send bytes.

``--targets postgres`` (comma-separated: nats, broker, sql, postgres) runs only some.

Each measurement is repeated ``--repeat`` times and the best kept (on a shared machine
interference only adds time); PostgreSQL's mirror and peer runs alternate, each after a
``CHECKPOINT`` so that no run writes out the pages of the runs before it. Not a test:
nothing here asserts.

For PostgreSQL every run is also printed with what does not depend on the machine's
load: CPU time per row of this process (the mirror, or the peer's client) and of the
PostgreSQL cluster (its postmaster's child processes, read from /proc before the
connections close), the mirror's startup (until its first batch is committed: tables,
connections) and the load average. Both sides run on the same two kinds of process, so
the CPU ratio (peer CPU per row / mirror CPU per row) is the throughput ratio a machine
whose cores are all busy would give, and cores / (CPU per row) its ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import nats
import sqlite_utils

from cloud_broker.config import TopicConfig
from cloud_broker.mirrors import LocalSource, MirrorManager, parse_mirror
from cloud_broker.mirrors.nats_target import message_headers
from cloud_broker.mirrors.settings import PG_BATCH_RECORDS, PG_CONNECTIONS
from cloud_broker.mirrors.sql_target import PK, record_row
from cloud_broker.storage import PartitionStore
from shared_log import Record

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mirror_pg import TOPIC, Comparison, Cpu  # noqa: E402 - bench/ is on sys.path
from plot import plot_rows  # noqa: E402 - bench/ is on sys.path (a script)

from tests.mirrors.pg_server import PASSWORD, PostgresServer  # noqa: E402

ADMIN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], log: Path, ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 30
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{args[0]} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def start_nats(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    proc = spawn([nats_bin, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "js")],
                 tmp / "nats.out", lambda: port_open(port))
    return proc, f"nats://127.0.0.1:{port}"


def start_broker(tmp: Path, topics: list[str], partitions: int
                 ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    lines = [f'data_dir = "{tmp / "target"}"', f'listen = "127.0.0.1:{port}"',
             f'[[tokens]]\ntoken = "{ADMIN}"\npermissions = ["admin"]']
    lines += [f"[topics.{t}]\npartitions = {partitions}" for t in topics]
    cfg = tmp / "target.toml"
    cfg.write_text("\n".join(lines) + "\n")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    proc = spawn([sys.executable, "-m", "cloud_broker.cli", "serve", "--config", str(cfg)],
                 tmp / "target.out", ready)
    return proc, url


def make_source(data_dir: Path, partitions: int, n: int) -> PartitionStore:
    store = PartitionStore(data_dir)
    store.ensure_topic(TopicConfig(TOPIC, partitions))
    for part in store.partitions(TOPIC):
        for b in range(0, n, 1000):
            part.log.append([Record(
                b"dev-%04d" % (i % 1000),
                json.dumps({"d": i % 1000, "seq": i, "temp": 20.5, "hum": 40,
                            "site": "plant-7", "fw": "1.2.3"}).encode().ljust(100),
                1_700_000_000_000 + i, (("origin", b"gw-1/telemetry/g1/%d" % i),))
                for i in range(b, min(b + 1000, n))])
        part.log.flush()
    return store


# -- runs ----------------------------------------------------------------------------------


async def run_mirror(store: PartitionStore, work: Path, table: dict, name: str,
                     cpu: Cpu | None = None, first: list[float] | None = None) -> float:
    """Seconds from start until every partition is copied; ``cpu`` is read over the same
    window (before the connections close), ``first`` gets the seconds until every
    partition had started copying (tables created, connections made, positions read)."""
    cfg = parse_mirror(name, {"topic": TOPIC, "wait_ms": 50, **table}, work)
    manager = MirrorManager(work / f"ck-{name}", LocalSource(store), [cfg])
    ends = {p.index: p.log.end_offset for p in store.partitions(TOPIC)}
    if cpu:
        cpu.start()
    t0 = time.perf_counter()
    await manager.start()
    runner = manager.runners[name]
    while not (len(runner.partitions) == len(ends) and all(
            ps.position == ends[p] for p, ps in runner.partitions.items())):
        if first is not None and not first and len(runner.partitions) == len(ends) and all(
                ps.state != "starting" for ps in runner.partitions.values()):
            first.append(time.perf_counter() - t0)
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    if cpu:
        cpu.stop()
    await manager.stop()
    return elapsed


async def nats_serial(url: str, store: PartitionStore, stream: str, limit: int) -> float:
    """js.publish per message, awaiting each ack: the plain nats-py way."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    recs = store.partition(TOPIC, 0).log.read(0, limit, 64 << 20)
    t0 = time.perf_counter()
    for r in recs:
        await js.publish(f"{stream.lower()}.0", r.value,
                         headers=message_headers(TOPIC, 0, r))
    elapsed = time.perf_counter() - t0
    await nc.close()
    return elapsed / len(recs)


async def nats_pipelined(url: str, store: PartitionStore, stream: str, limit: int) -> float:
    """publish_async in windows of 1000, then await the acks: no mirror around it."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    recs = store.partition(TOPIC, 0).log.read(0, limit, 64 << 20)
    t0 = time.perf_counter()
    for b in range(0, len(recs), 1000):
        futs = [await js.publish_async(f"{stream.lower()}.0", r.value,
                                       headers=message_headers(TOPIC, 0, r))
                for r in recs[b:b + 1000]]
        await asyncio.gather(*futs)
    elapsed = time.perf_counter() - t0
    await nc.close()
    return elapsed / len(recs)


def sql_plain(store: PartitionStore, path: Path, limit: int) -> float:
    recs = store.partition(TOPIC, 0).log.read(0, limit, 64 << 20)
    db = sqlite_utils.Database(path)
    db.conn.execute("PRAGMA journal_mode=WAL")
    t0 = time.perf_counter()
    known: set[str] = set()
    for b in range(0, len(recs), 1000):
        rows = [record_row(TOPIC, 0, r, True, known) for r in recs[b:b + 1000]]
        with db.conn:
            db["records"].upsert_all(rows, pk=PK, alter=True)
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed / len(recs)


async def best(repeat: int, fn: Callable[[int], Awaitable[float]]) -> float:
    """The highest rate of ``repeat`` runs (interference only slows a run down)."""
    return max([await fn(i) for i in range(repeat)])


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="mirror-bench-", dir=args.dir))
    procs: list[subprocess.Popen[bytes]] = []
    servers: list[PostgresServer] = []
    try:
        total = args.partitions * args.records
        store = make_source(work / "source", args.partitions, args.records)
        wanted = set(args.targets.split(","))
        nurl = burl = ""
        if "nats" in wanted:
            nproc, nurl = start_nats(work)
            procs.append(nproc)
        topics = [f"t{i}" for i in range(args.repeat)]
        if "broker" in wanted:
            bproc, burl = start_broker(work, topics, args.partitions)
            procs.append(bproc)
        if "postgres" in wanted:
            pg = PostgresServer(fsync=True).start()
            servers.append(pg)
        peer_n = min(args.records, args.peer_records)
        rows: list[tuple[str, float, str]] = []

        async def js_mirror(i: int) -> float:
            return total / await run_mirror(store, work, {
                "target": "nats", "servers": [nurl], "stream": f"M{i}",
                "subject_prefix": f"m{i}", "batch_records": args.batch}, f"js{i}")
        async def js_serial(i: int) -> float:
            return 1 / await nats_serial(nurl, store, f"S{i}", peer_n)
        async def js_pipe(i: int) -> float:
            return 1 / await nats_pipelined(nurl, store, f"P{i}", peer_n)
        async def broker_mirror(i: int) -> float:
            return total / await run_mirror(store, work, {
                "target": "broker", "url": burl, "token": ADMIN, "target_topic": topics[i],
                "batch_records": args.batch}, f"br{i}")
        async def sql_mirror(i: int) -> float:
            return total / await run_mirror(store, work, {
                "target": "sql", "path": str(work / f"m{i}.db"),
                "batch_records": args.batch}, f"sq{i}")
        async def sql_peer(i: int) -> float:
            return 1 / await asyncio.to_thread(sql_plain, store, work / f"p{i}.db", peer_n)

        comparison = Comparison(pg) if "postgres" in wanted else None

        async def pg_mirror(i: int, cpu: Cpu, first: list[float]) -> float:
            return total / await run_mirror(store, work, {
                "target": "postgres", "dsn": pg.dsn, "password": PASSWORD,
                "table": f"mirror{i}", "batch_records": args.pg_batch,
                "connections": args.pg_connections}, f"pg{i}", cpu, first)

        if "nats" in wanted:
            js = await best(args.repeat, js_mirror)
            serial = await best(args.repeat, js_serial)
            pipe = await best(args.repeat, js_pipe)
            rows += [
                ("mirror -> NATS JetStream", js, f"{js / serial:.1f}x js.publish per message"),
                ("  nats-py js.publish + ack, per message", serial, "1.0x (peer)"),
                ("  nats-py publish_async, windows of 1000", pipe, f"{pipe / serial:.1f}x")]
        if "broker" in wanted:
            br = await best(args.repeat, broker_mirror)
            rows += [("mirror -> broker (replicate endpoint)", br, "-")]
        if "sql" in wanted:
            sq = await best(args.repeat, sql_mirror)
            sqp = await best(args.repeat, sql_peer)
            rows += [
                ("mirror -> SQLite (sqlite-utils upsert)", sq,
                 f"{sq / sqp:.2f}x plain upsert_all"),
                ("  sqlite-utils upsert_all, 1000 per txn", sqp, "1.0x (peer)")]
        if comparison is not None:
            pgm, pgp, pgf = await comparison.run(args.repeat, store, total, peer_n,
                                                 args.pg_batch, args.pg_connections,
                                                 pg_mirror)
            rows += [
                ("mirror -> PostgreSQL (binary COPY)", pgm, f"{pgm / pgp:.1f}x executemany"),
                (f"  psycopg executemany, {args.pg_batch} per txn", pgp, "1.0x (peer)"),
                ("  server floor: prebuilt COPY data (ceiling)", pgf,
                 f"{pgf / pgp:.1f}x executemany; mirror at {pgm / pgf:.0%} of it")]
        print(f"\nmirror throughput: {args.partitions} partitions x {args.records} records "
              f"(~100 B values), batch_records={args.batch} (postgres {args.pg_batch}), "
              f"best of {args.repeat}; load average {os.getloadavg()[0]:.1f}; "
              f"peers on {peer_n} records of one partition\n")
        print(f"{'':44} {'records/s':>12}  ratio")
        for name, rate, ratio in rows:
            print(f"{name:44} {rate:12,.0f}  {ratio}")
        if comparison is not None:
            comparison.report(args.pg_connections)
        plot_rows("mirror", ("path", "records/s"), [(n, r) for n, r, _ in rows])
        store.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        for srv in servers:
            srv.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--records", type=int, default=25_000, help="per partition")
    parser.add_argument("--peer-records", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000, help="mirror batch_records")
    parser.add_argument("--pg-batch", type=int, default=PG_BATCH_RECORDS,
                        help="batch_records of the postgres mirror, rows per peer transaction")
    parser.add_argument("--pg-connections", type=int, default=PG_CONNECTIONS,
                        help="connections of the postgres mirror")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", default="nats,broker,sql,postgres")
    parser.add_argument("--dir", default=str(HERE / "out"))
    a = parser.parse_args()
    if a.quick:
        a.records, a.peer_records, a.repeat = 2000, 1000, 1
    os.makedirs(a.dir, exist_ok=True)
    asyncio.run(main(a))
