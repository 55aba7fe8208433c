"""One partition read by confluent-kafka over the Kafka listener vs the HTTP Consumer.

Run from the repository root::

    .venv/bin/python bench/kafka_consume.py            # 1,000,000 records, ~1 minute
    .venv/bin/python bench/kafka_consume.py --quick    # smoke run

Strategy: the partition is prefilled through the store (``bench/consume.py``'s records: a
10-byte device key, a 100-byte value, an ``origin`` header); the broker's two read paths
are first timed in this process (``in_process``: no client, no socket); then one real
``cloud-broker serve`` subprocess with ``[kafka]`` set serves both protocols on the same
data in the same run: the HTTP ``Consumer`` (the peer, ``async for record``), a
confluent-kafka (librdkafka) consumer assigned the partition from offset 0 reading every
message's key and value, and ``kcat -e`` writing to /dev/null. Best of ``--repeat``; the
load average is printed, since the machine is shared, and each row's broker CPU per
record (/proc) next to the HTTP row's, which load moves far less than the rates. Not a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consume import TOPIC, best, consumer_loop, prefill, start_broker
from plot import plot_printed_tables  # bench/ is on sys.path (a script)

HERE = Path(__file__).resolve().parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(work: Path, data: Path, compression: str) -> tuple[subprocess.Popen[bytes], str, str]:
    kafka = _port()
    proc, url = start_broker(work, data, extra=(
        f'[kafka]\nlisten = "127.0.0.1:{kafka}"\nsasl = false\n'
        f'compression = "{compression}"\n'))
    return proc, url, f"127.0.0.1:{kafka}"


def confluent(bootstrap: str, n: int) -> tuple[int, float]:
    from confluent_kafka import Consumer, TopicPartition
    # 8 MiB per partition fetch is ~53 000 of these records (~158 bytes each as Kafka
    # records): the HTTP peer's batch of 50 000. At 16 MiB (100 000 records) the broker
    # spends ~0.2 us/record more in the kernel (page faults of the larger answers).
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench",
                  "enable.auto.commit": False, "fetch.max.bytes": 64 << 20,
                  "max.partition.fetch.bytes": 8 << 20, "fetch.wait.max.ms": 100,
                  "queued.max.messages.kbytes": 256 * 1024})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    got, size = 0, 0
    t = time.perf_counter()
    while got < n:
        for m in c.consume(10_000, 1.0):
            if m.error() is None:
                got += 1
                size += len(m.value()) + len(m.key())
    secs = time.perf_counter() - t
    c.close()
    return got, secs


def kcat(bootstrap: str, n: int) -> tuple[int, float]:
    t = time.perf_counter()
    out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", TOPIC, "-p", "0", "-o",
                          "beginning", "-e", "-q", "-f", "%o\n", "-X",
                          "fetch.max.bytes=67108864"], capture_output=True, timeout=600)
    secs = time.perf_counter() - t
    return out.stdout.count(b"\n"), secs


def in_process(data: Path, n: int, repeat: int) -> None:
    """The two broker read paths in this process, alternating, best of ``repeat``: HTTP's
    (``fetch_columns`` + CBOR) and Kafka's (``fetch_batches`` + record batches), as CPU
    per record. Free of the clients and the sockets, so load moves it least."""
    from cloud_broker import record_codec as codec
    from cloud_broker.config import TopicConfig
    from cloud_broker.kafka.records import encode_batches
    from cloud_broker.storage.log_store import PartitionStore

    store = PartitionStore(data)
    (part,) = store.ensure_topic(TopicConfig(TOPIC, 1))

    def http(off: int) -> int:
        res = part.fetch_columns(off, 50_000, 64 << 20, end=part.durable_offset)
        codec.encode_cbor(codec.meta(TOPIC, 0, res, 0, n), res.columns)
        return res.next_offset

    def kafka(off: int) -> int:
        res = part.fetch_batches(off, 50_000, 64 << 20, end=part.durable_offset)
        encode_batches(res.batches)
        return res.next_offset

    best_of: dict[str, float] = {}
    for _ in range(repeat):
        for name, step in (("HTTP", http), ("Kafka", kafka)):
            off, t = 0, time.process_time()
            while off < n:
                off = step(off)
            us = (time.process_time() - t) / n * 1e6
            best_of[name] = min(best_of.get(name, us), us)
    store.close()
    print("\n| broker read path, in process (50 000 records a fetch) | CPU µs/rec | vs HTTP |")
    print("|---|---:|---:|")
    for name, label in (("HTTP", "HTTP: fetch_columns + CBOR columns"),
                        ("Kafka", "Kafka: fetch_batches + record batches v2")):
        print(f"| {label} | {best_of[name]:.2f} | {best_of[name] / best_of['HTTP']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    plot_printed_tables("kafka_consume")
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compression", default="none", choices=["none", "gzip", "zstd"])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.records, args.repeat = 100_000, 1
    (HERE / "out").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kafka-consume-", dir=HERE / "out"))
    n = args.records
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {n:,} records (100-byte values, 10-byte keys, one "
          f"'origin' header), Kafka compression {args.compression}, best of {args.repeat}",
          flush=True)
    try:
        prefill(work / "data", n, 100)
        in_process(work / "data", n, args.repeat)
        proc, url, bootstrap = start(work, work / "data", args.compression)
        try:
            rows = [
                ("HTTP: Consumer, async for record (max_records 50 000)",
                 best(lambda: asyncio.run(consumer_loop(url, n, 50_000)), n, args.repeat,
                      proc.pid)),
                ("Kafka: confluent-kafka consume(), key + value read",
                 best(lambda: confluent(bootstrap, n), n, args.repeat, proc.pid)),
            ]
            if shutil.which("kcat"):
                rows.append(("Kafka: kcat -e -f '%o\\n' > pipe",
                             best(lambda: kcat(bootstrap, n), n, args.repeat, proc.pid)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        http_rate = rows[0][1][0]
        print("\n| path | records/s | vs HTTP | server CPU µs/rec | vs HTTP | client CPU "
              "µs/rec | ≥ 500 k/s |")
        print("|---|---:|---:|---:|---:|---:|---|")
        http_cpu = rows[0][1][2]
        for label, (rate, c, s) in rows:
            # kcat is a subprocess: its CPU is not this process's
            client = "" if label.startswith("Kafka: kcat") else f"{c:.2f}"
            print(f"| {label} | {rate:,.0f} | {rate / http_rate:.2f} | {s:.2f} | "
                  f"{s / http_cpu:.2f} | {client} | {'met' if rate >= 500_000 else ''} |")
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
