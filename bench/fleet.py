"""A fleet of edges against one cloud broker: CPU per reading and ack latency.

Run from the repository root::

    .venv/bin/python bench/fleet.py                       # 1,000 edges x 10/s, then scale
    .venv/bin/python bench/fleet.py --quick               # 200 edges x 10/s, no scaling
    .venv/bin/python bench/fleet.py --stages 1000x10      # one stage only
    .venv/bin/python bench/fleet.py --stages 1000x10 --py-spy bench/out/fleet.txt

Strategy: the broker is a real ``cloud-broker serve`` subprocess (8 partitions, default
group commit: every ack is durable). The edges are not edge agents but protocol-level
senders: each one is an asyncio task with its own keep-alive HTTP/1.1 connection, its own
(edge, stream, generation) position and a device reading arriving every ``1/rate`` s.
A sender sends what has arrived as soon as it can, one request in flight (what arrives
meanwhile goes into the next batch, as the agent's forwarder does), encoded with the
shared ``uplink`` codec and written with raw asyncio streams, so the load generator costs
a few tens of µs per request instead of httpx's ~1 ms. The senders run in their own
processes (``--senders``, default 2) so they do not share the broker's event loop; the
broker's CPU is read from /proc over the measured window, and so is theirs.

Measured per stage: readings acked in the window, broker CPU µs per reading (target
≤ 10 µs at 1,000 x 10/s), latency from a reading's arrival to its ack (p50/p99/max;
target p99 ≤ 50 ms), requests per second. Stages go from the first to the last of
``--stages`` and stop after the first whose p99 passes 100 ms. The load average is
printed with the table. Nothing here asserts: targets are marked met/missed.

The ceiling (``--floor``, on by default; ``--no-floor`` skips it): the first stage again,
the same senders and requests, against a bare server (``FloorProtocol``, a uvloop
``asyncio.Protocol`` in its own process) that finds each request's end and writes a
canned ack: no HTTP framework, no decoding, no storage, no fsync. Its CPU per reading is
what the kernel's loopback TCP and one event-loop wake-up cost per request on this
machine, the floor under any server in Python that answers each request (HTTP or a
framed stream: the same reads and writes per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from uplink import Batch, UplinkRecord, decode_ack, encode_batch  # noqa: E402

console = Console(width=160)
CPU_TARGET_US = 10.0
P99_TARGET_MS = 50.0
SCALE_LIMIT_MS = 100.0
DEVICES_PER_EDGE = 10


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    if not s:
        return {"n": 0}
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "p50": pick(0.50), "p99": pick(0.99), "max": s[-1]}


# -- one sender process ------------------------------------------------------------------


class Edge:
    """One protocol-level edge: a position, a keep-alive connection, readings arriving."""

    def __init__(self, index: int, rate: float, start: float) -> None:
        self.edge_id = f"fleet-{index:05d}"
        self.generation = secrets.token_hex(8)
        self.next_offset = 0
        self.period = 1.0 / rate
        # spread the fleet's arrivals evenly over one period
        self.next_arrival = start + (index * 0.618034 % 1.0) * self.period
        self.seq = 0

    def arrived(self, now: float) -> list[tuple[float, UplinkRecord]]:
        out = []
        while self.next_arrival <= now:
            dev = self.seq % DEVICES_PER_EDGE
            ts = int(time.time() * 1000)
            value = (b'{"device":"%s-%02d","seq":%d,"ts":%d,"temp":21.%02d,"hum":48.5,'
                     b'"bat":3.71,"ok":true}' % (self.edge_id.encode(), dev, self.seq, ts,
                                                 self.seq % 100))
            out.append((self.next_arrival, UplinkRecord(
                self.next_offset, b"%s-%02d" % (self.edge_id.encode(), dev), ts, value)))
            self.next_offset += 1
            self.seq += 1
            self.next_arrival += self.period
        return out


async def run_edge(edge: Edge, port: int, topic: str, window: tuple[float, float],
                   stop_at: float, latencies: list[float], counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /v1/ingest/{topic} HTTP/1.1\r\nhost: fleet\r\n"
            "content-type: application/cbor\r\naccept: application/cbor\r\n"
            "content-encoding: identity\r\ncontent-length: ").encode()
    try:
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            pending = edge.arrived(now)
            if not pending:
                await asyncio.sleep(max(0.0, edge.next_arrival - now))
                continue
            records = tuple(r for _, r in pending)
            batch = Batch(edge.edge_id, "telemetry", edge.generation, records[0].offset,
                          records[-1].offset, records)
            body, _ = encode_batch(batch, "none")
            writer.write(head + b"%d\r\n\r\n" % len(body) + body)
            status_line = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_line.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            reply = await reader.readexactly(length)
            acked = time.monotonic()
            if status_line[9:12] != b"200":
                raise RuntimeError(f"{edge.edge_id}: {status_line[:40]!r} {reply[:200]!r}")
            ack = decode_ack(reply) if len(reply) > 1 else None  # the floor's is canned
            if ack is not None and ack.acked_offset != records[-1].offset:
                raise RuntimeError(f"{edge.edge_id}: acked {ack.acked_offset}, "
                                   f"sent up to {records[-1].offset}")
            if window[0] <= acked < window[1]:
                counts["requests"] += 1
                counts["readings"] += len(records)
                latencies.extend((acked - t) * 1000 for t, _ in pending)
    finally:
        writer.close()


async def sender_main(port: int, first: int, count: int, rate: float, start: float,
                      warmup: float, duration: float) -> dict[str, Any]:
    # ``start`` etc. are wall-clock (shared by every process); convert to monotonic
    offset = time.monotonic() - time.time()
    t0 = start + offset
    window = (t0 + warmup, t0 + warmup + duration)
    latencies: list[float] = []
    counts = {"requests": 0, "readings": 0}
    await asyncio.sleep(max(0.0, t0 - time.monotonic() - 0.5))
    edges = [Edge(i, rate, t0) for i in range(first, first + count)]

    async def cpu_window() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        a = time.process_time()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        return a, time.process_time()

    meter = asyncio.create_task(cpu_window())
    await asyncio.gather(*(run_edge(e, port, "telemetry", window, window[1] + 0.5,
                                    latencies, counts) for e in edges))
    cpu0, cpu1 = await meter
    return {"latencies": latencies, **counts, "cpu": cpu1 - cpu0}


# -- the floor server -------------------------------------------------------------------


class FloorProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive requests with a content-length, each answered with a fixed
    200: the least a server can do per request."""

    REPLY = (b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\n"
             b"content-length: 1\r\n\r\n\xa0")

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            at = buf.find(b"content-length: ", 0, end)
            size = int(buf[at + 16:buf.find(b"\r\n", at, end + 2)]) if at >= 0 else 0
            if len(buf) < end + 4 + size:
                break
            buf = buf[end + 4 + size:]
            self.transport.write(self.REPLY)
        self.buf = buf


def floor_main(port_file: str) -> None:
    import uvloop

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(
            FloorProtocol, "127.0.0.1", 0, backlog=4096)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    uvloop.run(serve())


def start_floor(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = work / "floor.port"
    proc = subprocess.Popen([sys.executable, __file__, "--role", "floor", "--port-file",
                             str(port_file)], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the floor server did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


# -- the driver --------------------------------------------------------------------------


def run_stage(port: int, broker_pid: int, edges: int, rate: float, senders: int,
              warmup: float, duration: float) -> dict[str, Any]:
    start = time.time() + 1.5
    per = [edges // senders + (1 if i < edges % senders else 0) for i in range(senders)]
    procs, first = [], 0
    for n in per:
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--role", "sender", "--port", str(port),
             "--first", str(first), "--count", str(n), "--rate", str(rate),
             "--start", str(start), "--warmup", str(warmup), "--duration", str(duration)],
            stdout=subprocess.PIPE, text=True))
        first += n
    time.sleep(max(0.0, start + warmup - time.time()))
    cpu0 = process_cpu(broker_pid)
    load0 = os.getloadavg()[0]
    time.sleep(max(0.0, start + warmup + duration - time.time()))
    cpu1 = process_cpu(broker_pid)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=warmup + duration + 60)
        if p.returncode != 0:
            raise RuntimeError(f"sender failed ({p.returncode})")
        outs.append(json.loads(out))
    lat = [x for o in outs for x in o["latencies"]]
    readings = sum(o["readings"] for o in outs)
    return {"edges": edges, "rate": rate, "readings": readings,
            "requests": sum(o["requests"] for o in outs), "duration": duration,
            "broker_cpu": user + system, "broker_sys": system,
            "sender_cpu": sum(o["cpu"] for o in outs),
            "load": (load0 + os.getloadavg()[0]) / 2, **pct(lat)}


def parse_stage(text: str) -> tuple[int, float]:
    edges, rate = text.lower().split("x")
    return int(edges), float(rate)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="1000x10,2000x10,1000x40,4000x10,1000x100,8000x10",
                    help="edges x readings/s per edge, in order")
    ap.add_argument("--senders", type=int, default=2, help="load generator processes")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--py-spy", help="record the broker with py-spy into this file "
                    "(collapsed stacks, GIL holder only)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the ceiling run against the bare server")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "floor":
        floor_main(args.port_file)
        return 0
    if args.role == "sender":
        res = asyncio.run(sender_main(args.port, args.first, args.count, args.rate,
                                      args.start, args.warmup, args.duration))
        print(json.dumps(res))
        return 0
    if args.quick:
        args.stages, args.duration, args.warmup = "200x10", 6.0, 2.0
    from tests.helpers import broker_server

    work = Path(tempfile.mkdtemp(prefix="fleet-"))
    server = broker_server(work / "broker")
    server.start()
    spy = None
    results = []
    try:
        assert server.proc is not None
        spy_bin = Path(sys.executable).parent / "py-spy"
        if args.py_spy and not spy_bin.exists():
            console.print("py-spy is not installed (pip install 'edgestream[bench]'): "
                          "running without the profile")
        elif args.py_spy:
            spy = subprocess.Popen([str(spy_bin), "record", "-p",
                                    str(server.proc.pid), "-o", args.py_spy, "-f", "raw",
                                    "--gil", "-r", "100"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for text in args.stages.split(","):
            edges, rate = parse_stage(text)
            r = run_stage(server.port, server.proc.pid, edges, rate, args.senders,
                          args.warmup, args.duration)
            results.append(r)
            console.print(f"{edges} x {rate:g}/s: p99 {r.get('p99', float('nan')):.1f} ms, "
                          f"broker {r['broker_cpu'] / max(r['readings'], 1) * 1e6:.1f} "
                          f"µs/reading")
            if r.get("p99", 1e9) > SCALE_LIMIT_MS:
                break
        if args.floor:
            server.stop()
            floor, port = start_floor(work)
            try:
                edges, rate = parse_stage(args.stages.split(",")[0])
                r = run_stage(port, floor.pid, edges, rate, args.senders, args.warmup,
                              args.duration)
                results.append({**r, "floor": True})
            finally:
                floor.kill()
                floor.wait(10)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title="fleet: protocol-level edges -> one cloud broker (durable acks)")
    for col in ("edges x readings/s", "offered/s", "acked/s", "requests/s",
                "broker CPU µs/rdg", "of which sys", "broker cores", "senders CPU µs/rdg", "p50 ms",
                "p99 ms", "max ms", "load avg"):
        table.add_column(col, justify="right")
    for r in results:
        d = r["duration"]
        table.add_row(f"{r['edges']} x {r['rate']:g}" + (" floor" if r.get("floor") else ""),
                      f"{r['edges'] * r['rate']:,.0f}",
                      f"{r['readings'] / d:,.0f}", f"{r['requests'] / d:,.0f}",
                      f"{r['broker_cpu'] / max(r['readings'], 1) * 1e6:.1f}",
                      f"{r['broker_sys'] / max(r['broker_cpu'], 1e-9):.0%}",
                      f"{r['broker_cpu'] / d:.2f}",
                      f"{r['sender_cpu'] / max(r['readings'], 1) * 1e6:.1f}",
                      *(f"{r.get(k, float('nan')):.1f}" for k in ("p50", "p99", "max")),
                      f"{r['load']:.1f}")
    console.print(table)
    first = results[0]
    cpu = first["broker_cpu"] / max(first["readings"], 1) * 1e6
    for r in results:
        if r.get("floor"):
            f = r["broker_cpu"] / max(r["readings"], 1) * 1e6
            console.print(f"floor (bare uvloop server, canned ack, same senders): {f:.1f} "
                          f"µs/reading, {r['broker_sys'] / max(r['broker_cpu'], 1e-9):.0%} "
                          f"of it in the kernel; the broker is {cpu / f:.1f}x the floor")
    console.print(f"first stage: broker {cpu:.1f} µs/reading (target ≤ {CPU_TARGET_US:g}: "
                  f"{'met' if cpu <= CPU_TARGET_US else 'missed'}), ack p99 "
                  f"{first.get('p99', float('nan')):.1f} ms (target ≤ {P99_TARGET_MS:g}: "
                  f"{'met' if first.get('p99', 1e9) <= P99_TARGET_MS else 'missed'}); "
                  f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
