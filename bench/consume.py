"""One partition read over HTTP on loopback by the Python client, against in-process ceilings.

Run from the repository root::

    .venv/bin/python bench/consume.py            # 2,000,000 records, ~1-2 minutes
    .venv/bin/python bench/consume.py --quick    # smoke run, a few seconds
    .venv/bin/python bench/consume.py --profile  # also cProfile the client side

Strategy: the partition is prefilled directly through shared_log (fast; records shaped
like ingested ones: a 10-byte device key, a value, an ``origin`` header) in a temp data
dir under ``bench/out/``, then a real ``cloud-broker serve`` subprocess is started on it
and read by this process. In the same run, on the same data, the table compares:

* ``Log.fetch`` and ``fetch_columns`` in process: the broker's read cost, rows vs columns
  (the ceiling of any server, which must at least read the log);
* ``fetch_columns`` + CBOR encode + client decode in process: the codec, without HTTP;
* ``BrokerClient.fetch`` over HTTP: one request at a time, records decoded, not iterated;
* ``Consumer`` over HTTP: ``async for record in consumer`` (the target: >= 500 k rec/s),
  for each ``--batch`` size (max_records per fetch).

Each row is the best of ``--repeat`` runs. The broker and this client share the
machine's cores with whatever else runs (load average printed). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from plot import plot_printed_tables  # bench/ is on sys.path (a script)

from cloud_broker.client import BrokerClient, Consumer
from cloud_broker.config import TopicConfig
from cloud_broker.record_codec import decode_cbor, encode_cbor, meta
from cloud_broker.storage import PartitionStore
from shared_log import Record, fetch_columns

HERE = Path(__file__).resolve().parent
TOPIC = "bench"
TARGET = 500_000


def prefill(data: Path, n: int, value_size: int) -> None:
    store = PartitionStore(data)
    (part,) = store.ensure_topic(TopicConfig(TOPIC, 1))
    blob = os.urandom(value_size)
    t0 = 1_700_000_000_000
    for base in range(0, n, 500):
        part.log.append([
            Record(b"dev-%06d" % (i % 5000), blob, t0 + i,
                   (("origin", b"gw-001/telemetry/3f9a1c2b7d/%d" % i),))
            for i in range(base, min(n, base + 500))])
    store.close()


def start_broker(work: Path, data: Path, port: int = 0, extra: str = ""
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """A ``cloud-broker serve`` on ``data``; ``extra`` is appended to its cloud.toml."""
    import socket
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cfg = work / "cloud.toml"
    cfg.write_text(f'data_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
                   f"[auth]\nrequired = false\n[topics.{TOPIC}]\npartitions = 1\n{extra}")
    proc = subprocess.Popen([sys.executable, "-m", "cloud_broker.cli", "serve", "--config",
                             str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(work / "broker.err", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("broker did not start: " + (work / "broker.err").read_text()[-2000:])


# -- the measured loops: each returns (records, seconds) ---------------------------------


def in_process(data: Path, n: int, batch: int, mode: str) -> tuple[int, float]:
    store = PartitionStore(data)
    (part,) = store.ensure_topic(TopicConfig(TOPIC, 1))
    log = part.log
    try:
        t, off, got = time.perf_counter(), 0, 0
        while off < n:
            if mode == "rows":
                res = log.fetch(off, batch, 64 << 20)
                got += len(res.records)
            else:
                cres = fetch_columns(log, off, batch, 64 << 20)
                if mode == "codec":
                    body = encode_cbor(meta(TOPIC, 0, cres, 0, n), cres.columns)
                    got += len(decode_cbor(body).records)
                else:
                    got += len(cres.columns)
                res = cres  # type: ignore[assignment]
            off = res.next_offset
        return got, time.perf_counter() - t
    finally:
        store.close()


async def http_fetch(url: str, n: int, batch: int) -> tuple[int, float]:
    client = BrokerClient(url)
    try:
        t, off, got = time.perf_counter(), 0, 0
        while off < n:
            res = await client.fetch(TOPIC, 0, off, batch, max_bytes=64 << 20)
            got += len(res.records)
            off = res.next_offset
        return got, time.perf_counter() - t
    finally:
        await client.close()


async def consumer_loop(url: str, n: int, batch: int) -> tuple[int, float]:
    got = 0
    async with Consumer(url, topics=[TOPIC], max_records=batch, max_bytes=64 << 20,
                        wait_ms=0) as consumer:
        t = time.perf_counter()
        async for _record in consumer:
            got += 1
            if got == n:
                break
        return got, time.perf_counter() - t


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of this process, or of ``pid`` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Result = tuple[float, float, float]  # records/s, client CPU us/record, server CPU us/record


def best(fn: Callable[[], tuple[int, float]], n: int, repeat: int,
         server: int | None = None) -> Result:
    """The fastest of ``repeat`` runs, with the CPU each side spent per record in it."""
    results = []
    for _ in range(repeat):
        c0, s0 = cpu_seconds(None), cpu_seconds(server) if server else 0.0
        got, secs = fn()
        c1, s1 = cpu_seconds(None), cpu_seconds(server) if server else 0.0
        assert got == n, f"read {got} records, expected {n}"
        results.append((got / secs, (c1 - c0) / got * 1e6, (s1 - s0) / got * 1e6))
    return max(results)


def main(argv: list[str] | None = None) -> int:
    plot_printed_tables("consume")
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--batch", type=int, nargs="+", default=[1000, 10_000, 50_000],
                   help="max_records per fetch for the Consumer rows")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", type=Path, default=HERE / "out")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile one Consumer run")
    args = p.parse_args(argv)
    if args.quick:
        args.records, args.repeat, args.batch = 100_000, 1, [10_000]
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="consume-", dir=args.dir))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    n, big = args.records, max(args.batch)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {n:,} records ({args.value_size}-byte values, 10-byte "
          f"keys, one 'origin' header), best of {args.repeat}", flush=True)
    data = work / "data"
    t = time.perf_counter()
    prefill(data, n, args.value_size)
    print(f"prefilled in {time.perf_counter() - t:.1f} s", flush=True)
    rows: list[tuple[str, int, Result]] = []

    def add(label: str, batch: int, result: Result) -> None:
        rows.append((label, batch, result))
        print(f"  {label} (max_records={batch}): {result[0]:,.0f} rec/s", flush=True)
    for mode, label in (("rows", "in process: Log.fetch (rows)"),
                        ("columns", "in process: fetch_columns"),
                        ("codec", "in process: fetch_columns + CBOR encode + decode")):
        add(label, big, best(lambda m=mode: in_process(data, n, big, m), n, args.repeat))
    proc, url = start_broker(work, data)
    try:
        add("HTTP: BrokerClient.fetch, one at a time", big, best(
            lambda: asyncio.run(http_fetch(url, n, big)), n, args.repeat, proc.pid))
        for b in args.batch:
            add("HTTP: Consumer, async for", b, best(
                lambda b=b: asyncio.run(consumer_loop(url, n, b)), n, args.repeat, proc.pid))
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(consumer_loop(url, n, big))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    ceiling = rows[1][2][0]
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end. CPU columns: microseconds of "
          "CPU per record spent by this process (client) and by the broker process (server); "
          "'CPU-bound' = 1e6 / max(client, server), the rate two otherwise idle cores would "
          "allow when client and server overlap (the Consumer prefetches).")
    print("\n| path | max_records | records/s | vs fetch_columns | client CPU us/rec "
          "| server CPU us/rec | CPU-bound rec/s | >= 500 k/s |")
    print("|---|---:|---:|---:|---:|---:|---:|:---:|")
    for label, b, (rate, cus, sus) in rows:
        http = label.startswith("HTTP")
        bound = 1e6 / max(cus, sus) if http else 1e6 / cus
        target = ("met" if rate >= TARGET else "missed") if label.startswith("HTTP: C") else ""
        print(f"| {label} | {b:,} | {rate:,.0f} | {rate / ceiling:.2f} | {cus:.2f} | "
              f"{sus:.2f} | {bound:,.0f} | {target} |" if http else
              f"| {label} | {b:,} | {rate:,.0f} | {rate / ceiling:.2f} | {cus:.2f} | - | "
              f"{bound:,.0f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
