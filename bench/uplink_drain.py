"""Uplink backlog drain: edge log -> Forwarder/HttpUplink -> cloud broker, vs JetStream.

Run from the repository root::

    .venv/bin/python bench/uplink_drain.py              # full run: 1 M readings, ~5 min
    .venv/bin/python bench/uplink_drain.py --quick      # smoke run, 50 k readings
    .venv/bin/python bench/uplink_drain.py --profile    # + cProfile of both processes

Strategy: one edge log holds the backlog (N readings of ~100 bytes from 1,000 device
keys, JSON-like so compression has something to do), built once and copied fresh for
every run. A run starts a real ``cloud-broker serve`` subprocess with an 8-partition
topic (default group commit: every ack is durable) and drains the copy with the real
Forwarder and HttpUplink in this process until every reading is acked, so the two
processes share the machine's two cores like an edge and a cloud on one box would.
Several uplink settings are tried (batch size, compression, requests in flight); the
best and the defaults are reported. The peer, in the same run, is a nats-server with
JetStream (file storage) and nats-py publishing the same readings one message each,
with acks, 500 in flight. The table gives readings/s and the ratio to JetStream.

Not a test: nothing here asserts; targets are marked met/missed. All data lives in a
temp dir under ``bench/out/`` (or ``--dir``), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import os
import platform
import pstats
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from plot import plot_printed_tables  # noqa: E402 - bench/ is on sys.path (a script)

from cloud_broker.cli import tune_gc  # noqa: E402
from edge_agent.config import EdgeConfig, StreamConfig, UplinkConfig  # noqa: E402
from edge_agent.forwarder import Forwarder, StreamSender  # noqa: E402
from edge_agent.streams import open_stream  # noqa: E402
from edge_agent.uplink_http import HttpUplink  # noqa: E402
from shared_log import Log, Record  # noqa: E402
from tests.helpers import Server, broker_server, free_port, nats_server  # noqa: E402

DRAIN_TARGET = 200_000  # readings/s
RATIO_TARGET = 8.0  # x JetStream publish
DEFAULTS = UplinkConfig()
GC_DEFAULTS = gc.get_threshold()
LOG_BATCH = 500  # readings per edge log append


@dataclass(frozen=True)
class Setting:
    batch: int
    compression: str
    in_flight: int
    edge_gc: str = "default"  # "tuned": the broker's cloud_broker.cli.tune_gc on the edge too

    @property
    def label(self) -> str:
        default = (self.batch, self.compression, self.in_flight) == (
            DEFAULTS.max_batch_records, DEFAULTS.compression, DEFAULTS.max_in_flight)
        return (f"{self.batch}/{self.compression}/{self.in_flight}"
                + (" edge gc tuned" if self.edge_gc == "tuned" else "")
                + (" (defaults)" if default else ""))


@dataclass
class Result:
    name: str
    readings: int
    seconds: float
    wire_bytes: int = 0
    note: str = ""
    edge_cpu: float = 0.0  # CPU seconds of the edge process during the run
    cloud_cpu: float = 0.0  # CPU seconds of the broker process during the run

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


# -- data --------------------------------------------------------------------------------


def reading(i: int, devices: int, size: int, headers: bool = False) -> Record:
    """A JSON-ish reading of ``size`` bytes from device ``i % devices``; with ``headers``
    the three headers the edge agent's MQTT ingest stores with a JSON reading."""
    dev = i % devices
    value = (b'{"device":"device-%05d","seq":%d,"ts":%d,"temp":%d.%02d,"hum":%d.%d,'
             b'"bat":3.%02d,"ok":true}' % (dev, i // devices, 1_700_000_000_000 + i,
                                           15 + i % 20, i % 100, 30 + i % 50, i % 10,
                                           i % 100))
    value = value[:size].ljust(size, b" ")
    hdrs = ((("content-type", b"application/json"), ("seq", b"%d" % (i // devices)),
             ("device-ts", b"%d" % (1_700_000_000_000 + i))) if headers else ())
    return Record(b"device-%05d" % dev, value, 1_700_000_000_000 + i, hdrs)


def edge_cfg(data_dir: Path, url: str, s: Setting) -> EdgeConfig:
    return EdgeConfig(
        edge_id="bench-edge", data_dir=data_dir,
        streams=(StreamConfig("telemetry", ("devices/+/telemetry",),
                              segment_bytes=64 * 1024 * 1024),),
        uplink=dataclasses.replace(DEFAULTS, url=url, max_batch_records=s.batch,
                                   compression=s.compression, max_in_flight=s.in_flight,
                                   max_batch_bytes=max(DEFAULTS.max_batch_bytes,
                                                       s.batch * 200)),
    )


def build_backlog(root: Path, n: int, devices: int, size: int, headers: bool) -> Path:
    cfg = edge_cfg(root, "http://unused", Setting(1, "none", 1))
    store = open_stream(cfg, cfg.streams[0])
    # 500 readings per append: what the agent's MQTT ingest group-commits at ~100k/s
    for lo in range(0, n, LOG_BATCH):
        store.log.append([reading(i, devices, size, headers)
                          for i in range(lo, min(n, lo + LOG_BATCH))])
    store.log.close()
    return root


# -- one drain ---------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain(cfg: EdgeConfig, timeout: float, broker_pid: int) -> Result:
    store = open_stream(cfg, cfg.streams[0])
    n = store.log.end_offset - store.log.start_offset
    u = cfg.uplink
    up = HttpUplink(u.url, timeout_s=30,
                    max_connections=u.max_in_flight)
    fwd = Forwarder([StreamSender(store, cfg.edge_id, u)], up, u)
    started = time.perf_counter()
    cpu0, broker0 = time.process_time(), process_cpu(broker_pid)
    task = asyncio.create_task(fwd.run(persist_interval_s=0.5))
    try:
        while not fwd.drained():
            if task.done():
                task.result()
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"not drained after {timeout}s")
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu, broker_cpu = time.process_time() - cpu0, process_cpu(broker_pid) - broker0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await up.aclose()
        store.log.close()
    stats = fwd.senders[0].stats
    note = f"{stats.refusals} refusals" if stats.refusals else ""
    return Result("", n, elapsed, up.bytes_sent, note, cpu, broker_cpu)


def stored_records(data_dir: Path) -> int:
    total = 0
    for p in (data_dir / "topics" / "telemetry").iterdir():
        if p.is_dir():
            with Log(p, read_only=True) as log:
                total += log.end_offset - log.start_offset
    return total


def profiled_broker(tmp: Path, prof: Path) -> Server:
    server = broker_server(tmp)
    server.args = [sys.executable, "-m", "cProfile", "-o", str(prof), *server.args[1:]]
    return server


def run_drain(work: Path, template: Path, s: Setting, n: int, profile: Path | None
              ) -> Result:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    edge_dir = run_dir / "edge"
    shutil.copytree(template, edge_dir)
    broker = (profiled_broker(run_dir / "broker", profile / "broker.prof") if profile
              else broker_server(run_dir / "broker"))
    broker.start()
    try:
        cfg = edge_cfg(edge_dir, f"http://127.0.0.1:{broker.port}", s)
        if profile:
            prof = cProfile.Profile()
            prof.enable()
        assert broker.proc is not None
        if s.edge_gc == "tuned":
            tune_gc()
        try:
            result = asyncio.run(drain(cfg, max(120, n / 5000), broker.proc.pid))
        finally:
            gc.unfreeze()
            gc.set_threshold(*GC_DEFAULTS)
        if profile:
            prof.disable()
            prof.dump_stats(profile / "edge.prof")
    finally:
        if profile and broker.proc is not None:
            # uvicorn re-raises SIGTERM after shutdown, which kills cProfile before it
            # writes; SIGINT ends in a KeyboardInterrupt that cProfile survives.
            broker.proc.send_signal(signal.SIGINT)
            broker.proc.wait(60)
        broker.stop(timeout=60)
    stored = stored_records(run_dir / "broker" / "data")
    if stored != n:
        result.note += f" STORED {stored} != {n}!"
    shutil.rmtree(run_dir, ignore_errors=True)
    return dataclasses.replace(result, name=s.label)


# -- JetStream ---------------------------------------------------------------------------


async def jetstream_publish(port: int, server_pid: int, n: int, devices: int, size: int,
                            in_flight: int = 500) -> Result:
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream(publish_async_max_pending=in_flight)
    await js.add_stream(name="BENCH", subjects=["bench.>"])
    msgs = [(f"bench.device-{i % devices:05d}", reading(i, devices, size).value)
            for i in range(n)]
    started = time.perf_counter()
    cpu0, server0 = time.process_time(), process_cpu(server_pid)
    for subject, payload in msgs:
        await js.publish_async(subject, payload)
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    cpu, server_cpu = time.process_time() - cpu0, process_cpu(server_pid) - server0
    info = await js.stream_info("BENCH")
    await nc.close()
    if info.state.messages != n:
        raise RuntimeError(f"JetStream stored {info.state.messages} of {n}")
    return Result("nats-py JetStream publish (ack, 500 in flight)", n, elapsed, 0,
                  "cloud CPU = nats-server", cpu, server_cpu)


def run_jetstream(work: Path, n: int, devices: int, size: int) -> Result:
    server = nats_server(work / "nats", port=free_port()).start()
    try:
        assert server.proc is not None
        return asyncio.run(jetstream_publish(server.port, server.proc.pid, n, devices, size))
    finally:
        server.stop()
        shutil.rmtree(work / "nats", ignore_errors=True)


# -- where the CPU goes -----------------------------------------------------------------


def stage_costs(work: Path, n: int, devices: int, size: int,
                headers: bool) -> list[tuple[str, str, float]]:
    """CPU µs per reading of each step of the path, single-threaded, best of 5, GC as the
    broker runs it (cloud_broker.cli.tune_gc). (side, step, µs)."""
    from cloud_broker.ingest import frame_block
    from edge_agent.tail import block_of
    from shared_log import encode_framed, fetch_columns
    from uplink import Batch, decode_batch, encode_batch

    log = Log(work / "stages")
    for lo in range(0, n, LOG_BATCH):
        log.append([reading(i, devices, size, headers)
                    for i in range(lo, min(n, lo + LOG_BATCH))])
    out: list[tuple[str, str, float]] = []

    def timed(side: str, step: str, fn):  # type: ignore[no-untyped-def]
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            value = fn()
            best = min(best, time.process_time() - t0)
        out.append((side, step, best / n * 1e6))
        return value

    tune_gc()
    try:
        res = timed("edge", "shared_log fetch_columns",
                    lambda: fetch_columns(log, 0, max_records=n, max_bytes=1 << 30))
        block = timed("edge", "columns -> RecordBlock (forwarder)",
                      lambda: block_of(res.columns))
        batch = Batch.trusted("e", "s", "g", 0, n - 1, block)
        body = timed("edge", "encode_batch none (uplink)", lambda: encode_batch(batch)[0])
        timed("edge", "encode_batch zstd (uplink)", lambda: encode_batch(batch, "zstd"))
        decoded = timed("cloud", "decode_batch none (uplink, column checks)",
                        lambda: decode_batch(body, None, max_decompressed_size=1 << 30,
                                             max_records=n))
        framed = timed("cloud", "partition + frame + origin (ingest, 8 partitions)",
                       lambda: frame_block(decoded.records, 8, [-1] * 8, {}, b"e/s/g/")[0])
        timed("cloud", "shared_log batch CRC + header (8 partitions)",
              lambda: [encode_framed(0, f.count, f.max_timestamp, b"".join(f.pieces))
                       for f in framed])
    finally:
        gc.unfreeze()
        gc.set_threshold(*GC_DEFAULTS)
        log.close()
    return out


# -- report ------------------------------------------------------------------------------


def report(drains: list[Result], js: Result, markdown: bool) -> None:
    best = max(drains, key=lambda r: r.rate)
    head = ("run: batch/compression/in flight", "readings", "s", "readings/s", "wire MB/s",
            "edge CPU us/rdg", "cloud CPU us/rdg", "vs JetStream",
            f">= {DRAIN_TARGET // 1000}k/s", "notes")
    rows = []
    for r in drains:
        rows.append((r.name + (" (best)" if r is best else ""), f"{r.readings:,}",
                     f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                     f"{r.wire_bytes / r.seconds / 1e6:.1f}",
                     f"{r.edge_cpu / r.readings * 1e6:.1f}",
                     f"{r.cloud_cpu / r.readings * 1e6:.1f}",
                     f"{r.rate / js.rate:.1f}x", "met" if r.rate >= DRAIN_TARGET else "missed",
                     r.note))
    rows.append((js.name, f"{js.readings:,}", f"{js.seconds:.2f}", f"{js.rate:,.0f}", "",
                 f"{js.edge_cpu / js.readings * 1e6:.1f}",
                 f"{js.cloud_cpu / js.readings * 1e6:.1f}", "1.0x", "", js.note))
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="uplink backlog drain vs JetStream publish")
        for h in head:
            table.add_column(h, justify="left" if h.startswith(("run", "notes")) else "right")
        for row in rows:
            table.add_row(*row)
        Console(width=200).print(table)
    ratio = best.rate / js.rate
    ceiling = 1e6 / (max(best.edge_cpu, best.cloud_cpu) / best.readings * 1e6)
    print(f"\nbest drain: {best.name}: {best.rate:,.0f} readings/s "
          f"({'met' if best.rate >= DRAIN_TARGET else 'missed'}: >= {DRAIN_TARGET:,}/s); "
          f"{ratio:.1f}x JetStream ({'met' if ratio >= RATIO_TARGET else 'missed'}: "
          f">= {RATIO_TARGET:.0f}x)")
    print(f"CPU ceiling of the best run if each process had a core of its own: "
          f"{ceiling:,.0f} readings/s (the busier side: "
          f"{'edge' if best.edge_cpu >= best.cloud_cpu else 'cloud'})")


def parse_settings(text: str) -> list[Setting]:
    out = []
    for part in text.split(","):
        batch, comp, flight, *edge_gc = part.split(":")
        out.append(Setting(int(batch), comp, int(flight), *edge_gc))
    return out


def main() -> int:
    plot_printed_tables("uplink_drain")
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--jetstream-records", type=int, default=200_000,
                    help="readings published to JetStream (its rate is per reading)")
    ap.add_argument("--settings", type=parse_settings,
                    default=parse_settings("5000:zstd:4,10000:zstd:8,10000:none:8,"
                                           "10000:zstd:8:tuned,10000:none:8:tuned"),
                    help="batch:compression:in_flight[:tuned],... (tuned: the edge process "
                         "uses the broker's GC settings; the defaults are always run)")
    ap.add_argument("--quick", action="store_true", help="50 k readings, two settings")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the best setting's edge and broker (top functions)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--stages", action="store_true",
                    help="also time each step of the path in-process (CPU µs per reading)")
    ap.add_argument("--agent-headers", action="store_true",
                    help="readings carry the three headers the edge agent stores "
                         "(content-type, seq, device-ts)")
    ap.add_argument("--dir", type=Path, default=HERE / "out")
    args = ap.parse_args()
    if args.quick:
        args.records, args.jetstream_records = 50_000, 20_000
        args.settings = parse_settings("5000:zstd:4")
    default = Setting(DEFAULTS.max_batch_records, DEFAULTS.compression,
                      DEFAULTS.max_in_flight)
    settings = [default, *(s for s in args.settings if s != default)]

    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="uplink_drain-", dir=args.dir))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        print(f"python {platform.python_version()}, {os.cpu_count()} cpus, "
              f"load {os.getloadavg()[0]:.1f}; building a backlog of {args.records:,} "
              f"readings ({args.value_size} B, {args.devices} devices, "
              f"{LOG_BATCH} per log batch) ...", flush=True)
        template = build_backlog(work / "template", args.records, args.devices,
                                 args.value_size, args.agent_headers)
        drains = []
        for s in settings:
            r = run_drain(work, template, s, args.records, None)
            print(f"  {r.name}: {r.rate:,.0f} readings/s in {r.seconds:.1f}s {r.note}",
                  flush=True)
            drains.append(r)
        js = run_jetstream(work, args.jetstream_records, args.devices, args.value_size)
        print(f"  {js.name}: {js.rate:,.0f} readings/s", flush=True)
        report(drains, js, args.markdown)
        if args.stages:
            print("\n| side | step | CPU µs/reading |\n|---|---|---:|")
            for side, step, us in stage_costs(work, 100_000, args.devices, args.value_size,
                                              args.agent_headers):
                print(f"| {side} | {step} | {us:.2f} |")
        if args.profile:
            best = settings[max(range(len(drains)), key=lambda i: drains[i].rate)]
            prof_dir = work / "profile"
            prof_dir.mkdir()
            run_drain(work, template, best, args.records, prof_dir)
            for side in ("edge", "broker"):
                print(f"\n== cProfile: {side} ({best.label}), top 25 by own time ==")
                pstats.Stats(str(prof_dir / f"{side}.prof")).sort_stats("tottime").print_stats(25)
        print(f"load {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
