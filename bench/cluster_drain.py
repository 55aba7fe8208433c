"""Cluster mode: backlog drain edge -> broker -> 3-node JetStream (replicas 3) vs nats-py.

Run from the repository root::

    .venv/bin/python bench/cluster_drain.py            # 300 k readings
    .venv/bin/python bench/cluster_drain.py --quick    # 50 k readings
    .venv/bin/python bench/cluster_drain.py --profile  # + cProfile of the cluster broker

Strategy: the same backlog (bench/uplink_drain.py builds it: ~100-byte readings from
1,000 devices) is drained, in one run, by the real Forwarder/HttpUplink into

1. a ``cloud-broker serve`` with ``[storage] backend = "jetstream"``, replicas 3, over a
   3-node nats-server cluster (every ack after the replicated JetStream acks);
2. the same broker with the local store (shared_log, group commit), the cost of
   replication;

and the peer is nats-py publishing the same readings to the same cluster, one message per
reading (R3 file stream), up to 1,000 acks in flight. Then consumer fetch: every
partition read with ``fetch_columns`` from the replicated store (cold: no tail cache,
every body read from JetStream; warm: the tail cache) vs the local store. Targets: drain
>= 5x the peer and >= 100k readings/s; fetch >= 50 % of the local store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from uplink_drain import (  # noqa: E402
    Result,
    Setting,
    build_backlog,
    drain,
    edge_cfg,
    process_cpu,
    reading,
)

from cloud_broker.config import TopicConfig  # noqa: E402
from cloud_broker.storage import PartitionStore  # noqa: E402
from cloud_broker.storage.jetstream import (  # noqa: E402
    Connection,
    JetStreamSettings,
    JetStreamStore,
)
from tests.cluster.natsd import NatsCluster  # noqa: E402
from tests.helpers import broker_server  # noqa: E402

DRAIN_TARGET, RATIO_TARGET, FETCH_TARGET = 100_000, 5.0, 0.5
PARTITIONS = 8
PREFIX = "bench"


def storage_toml(cluster: NatsCluster) -> str:
    servers = ", ".join(f'"{u}"' for u in cluster.urls)
    return (f'[storage]\nbackend = "jetstream"\n[storage.jetstream]\nservers = [{servers}]\n'
            f'replicas = 3\nstream_prefix = "{PREFIX}"\n')


def nats_cpu(cluster: NatsCluster) -> float:
    return sum(process_cpu(n.proc.pid) for n in cluster.nodes if n.proc is not None)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of process ``pid``: cProfile sees only the main thread, and
    the JetStream store publishes from its own client thread."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out[task.name] = process_cpu_path(task / "stat")
    return out


def process_cpu_path(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_drain(work: Path, template: Path, s: Setting, name: str, extra: str,
              cluster: NatsCluster, profile: Path | None) -> Result:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    shutil.copytree(template, run_dir / "edge")
    broker = broker_server(run_dir / "broker", topics={"telemetry": PARTITIONS}, extra=extra)
    if profile is not None:
        broker.args = [sys.executable, "-m", "cProfile", "-o", str(profile),
                       *broker.args[1:]]
    broker.start()
    assert broker.proc is not None
    nats0, threads0 = nats_cpu(cluster), thread_cpu(broker.proc.pid)
    try:
        cfg = edge_cfg(run_dir / "edge", f"http://127.0.0.1:{broker.port}", s)
        result = asyncio.run(drain(cfg, 600, broker.proc.pid))
        threads = thread_cpu(broker.proc.pid)
    finally:
        if profile is not None:
            broker.proc.send_signal(signal.SIGINT)  # cProfile writes on KeyboardInterrupt
            broker.proc.wait(60)
        broker.stop(timeout=60)
    result.name = f"{name} {s.label}"
    busy = sorted((cpu - threads0.get(t, 0.0) for t, cpu in threads.items()), reverse=True)
    result.note += ("; " if result.note else "") + "busiest broker threads " + "/".join(
        f"{cpu / result.readings * 1e6:.1f}" for cpu in busy[:3]) + " us/rdg"
    if extra:
        us = (nats_cpu(cluster) - nats0) / result.readings * 1e6
        result.note += ("; " if result.note else "") + f"nats-server CPU {us:.1f} us/rdg (3 nodes)"
    result.data_dir = run_dir / "broker" / "data"  # type: ignore[attr-defined]
    return result


async def peer_publish(cluster: NatsCluster, n: int, devices: int, size: int,
                       in_flight: int = 1000) -> Result:
    import nats

    nc = await nats.connect(servers=cluster.urls)
    js = nc.jetstream(publish_async_max_pending=in_flight, timeout=30)
    await js.add_stream(name="PEER", subjects=["peer.>"], num_replicas=3)
    msgs = [(f"peer.device-{i % devices:05d}", reading(i, devices, size).value)
            for i in range(n)]
    started = time.perf_counter()
    cpu0, nats0 = time.process_time(), nats_cpu(cluster)
    for subject, payload in msgs:
        await js.publish_async(subject, payload)
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    cpu, ncpu = time.process_time() - cpu0, nats_cpu(cluster) - nats0
    info = await js.stream_info("PEER")
    await js.delete_stream("PEER")
    await nc.close()
    if info.state.messages != n:
        raise RuntimeError(f"JetStream stored {info.state.messages} of {n}")
    return Result(f"nats-py publish, 1 msg/reading, R3, {in_flight} in flight", n, elapsed,
                  0, "cloud CPU = 3 nats-servers", cpu, ncpu)


def read_all(parts: list) -> tuple[int, float]:  # type: ignore[type-arg]
    started, n = time.perf_counter(), 0
    for p in parts:
        offset = p.start_offset
        while offset < p.durable_offset:
            res = p.fetch_columns(offset, 5000, 4 << 20)
            n += len(res.columns)
            offset = res.next_offset
    return n, time.perf_counter() - started


def fetch_rates(cluster: NatsCluster, local_dir: Path,
                repeat: int = 3) -> list[tuple[str, int, float]]:
    """Each reader's best of ``repeat`` full reads, the readers taking turns (a cold one
    from a new store each time): this machine's speed drifts over seconds, and one slow
    pass, or one reader's passes all falling in a slow spell, must not decide a ratio."""
    labels = ("local store (shared_log)", "JetStream R3, cold (no tail cache)",
              "JetStream R3, warm (tail cache)")
    runs: dict[str, list[tuple[int, float]]] = {label: [] for label in labels}
    local = PartitionStore(local_dir)
    try:
        local_parts = local.ensure_topic(TopicConfig("telemetry", PARTITIONS))
        for _ in range(repeat):
            runs[labels[0]].append(read_all(local_parts))
            for label, cache in ((labels[1], 0), (labels[2], 64 << 20)):
                store = JetStreamStore(JetStreamSettings(Connection(tuple(cluster.urls)),
                                                         stream_prefix=PREFIX,
                                                         cache_bytes=cache))
                try:
                    runs[label].append(read_all(store.ensure_topic(
                        TopicConfig("telemetry", PARTITIONS))))
                finally:
                    store.close()
    finally:
        local.close()
    return [(label, *min(runs[label], key=lambda r: r[1] / max(r[0], 1)))
            for label in labels]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--peer-records", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--setting", default="10000:zstd:8", help="batch:compression:in_flight")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fetch-repeat", type=int, default=3, help="best of N full reads each")
    ap.add_argument("--dir", type=Path, default=HERE / "out")
    args = ap.parse_args()
    if args.quick:
        args.records, args.peer_records = 50_000, 20_000
    batch, comp, flight = args.setting.split(":")
    s = Setting(int(batch), comp, int(flight))
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cluster_drain-", dir=args.dir))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    cluster = NatsCluster(work / "nats", size=3)
    try:
        print(f"{os.cpu_count()} cpus, load {os.getloadavg()}; backlog {args.records:,} "
              f"readings ...", flush=True)
        template = build_backlog(work / "template", args.records, args.devices,
                                 args.value_size, False)
        cluster.start()
        prof = work / "broker.prof" if args.profile else None
        rc = run_drain(work, template, s, "edge -> broker -> JetStream R3", storage_toml(cluster),
                       cluster, prof)
        print(f"  {rc.name}: {rc.rate:,.0f}/s", flush=True)
        rl = run_drain(work, template, s, "edge -> broker -> local store", "", cluster, None)
        print(f"  {rl.name}: {rl.rate:,.0f}/s", flush=True)
        peer = asyncio.run(peer_publish(cluster, args.peer_records, args.devices,
                                        args.value_size))
        print(f"  {peer.name}: {peer.rate:,.0f}/s", flush=True)
        fetches = fetch_rates(cluster, rl.data_dir,  # type: ignore[attr-defined]
                              args.fetch_repeat)
        print(f"\nload average {os.getloadavg()}\n")
        print("| run | readings | s | readings/s | broker CPU us/rdg | vs peer | target |"
              " notes |\n|---|---:|---:|---:|---:|---:|---|---|")
        for r in (rc, rl, peer):
            target = ""
            if r is rc:
                ok = r.rate >= DRAIN_TARGET and r.rate / peer.rate >= RATIO_TARGET
                target = ("met" if ok else "missed") + " (>= 100k/s and >= 5x)"
            print(f"| {r.name} | {r.readings:,} | {r.seconds:.2f} | {r.rate:,.0f} | "
                  f"{r.cloud_cpu / r.readings * 1e6:.1f} | {r.rate / peer.rate:.1f}x | "
                  f"{target} | {r.note} |")
        local_rate = fetches[0][1] / fetches[0][2]
        print("\n| consumer fetch | records | s | records/s | vs local |\n"
              "|---|---:|---:|---:|---:|")
        for label, n, secs in fetches:
            rate = n / secs
            verdict = "" if "local" in label else (
                " (>= 50%: met)" if rate >= FETCH_TARGET * local_rate else " (>= 50%: missed)")
            print(f"| {label} | {n:,} | {secs:.2f} | {rate:,.0f} | "
                  f"{rate / local_rate:.0%}{verdict} |")
        if prof is not None:
            print("\ncluster broker profile (cumulative, top 25):")
            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)
    finally:
        cluster.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
