"""Edge processing: uplink bytes with deadband + 1-minute windows vs raw forwarding,
transform throughput, and the agent's CPU per reading for transforming vs forwarding.

Run from the repository root::

    .venv/bin/python bench/edge_transforms.py            # two fleets, 300 k readings each
    .venv/bin/python bench/edge_transforms.py --quick    # 30 k readings each

Strategy: readings come from the device simulator's sensor models (``device_simulator.
sensors``: env, tracker and vibration devices, seeded) and its payload encoder, with
alarms mixed in, and are written to a raw edge log with the headers the ingest adds.
The real ``TransformRunner`` then runs the stream's transforms (route alarms, deadband
on temperature, 60 s windows over battery and voltage) into derived logs. The peer in
the same run is raw forwarding: both the raw log and the derived logs are cut into
uplink batches exactly as the forwarder does (``fetch_columns`` -> ``block_of`` ->
``encode_batch``, zstd, 5,000 records per batch) and the encoded bytes are counted. A
last reading one window later closes the open windows so both sides cover the same
readings. Alarms: every alarm reading must be in the derived alarm stream.

Not a test: nothing here asserts; targets are marked met/missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plot import plot_printed_tables  # bench/ is on sys.path (a script)

from device_simulator import payloads, sensors
from edge_agent.config import parse_config
from edge_agent.edgeproc import derived_streams
from edge_agent.streams import StreamStore, open_stream
from edge_agent.tail import block_of
from edge_agent.transforms import TransformRunner
from shared_log import Record, fetch_columns
from uplink import Batch, encode_batch

TRANSFORMS = [
    {"type": "route", "expr": "alarm", "to": "alarms", "priority": 0},
    {"type": "deadband", "field": "temperature", "threshold": 0.5, "heartbeat_s": 300},
    {"type": "window", "size_s": 60, "lateness_s": 5, "fields": ["battery", "voltage"],
     "aggregates": ["count", "min", "max", "mean"]},
]
#: the peer config without the deadband: every reading ends in a window
WINDOW_ONLY = [TRANSFORMS[0], TRANSFORMS[2]]
ALARM_RATIO = 0.0005
T0 = 1_700_000_000_000


def config(data: Path, transforms: list[dict[str, Any]] = TRANSFORMS) -> Any:
    return parse_config({"edge_id": "bench", "data_dir": str(data), "streams": [
        {"name": "telemetry", "topics": ["devices/+/telemetry"], "forward": False,
         "transforms": transforms}]})


def fill(raw: StreamStore, devices: int, rate: float, seconds: int) -> tuple[int, int]:
    """Simulated readings in time order; returns (readings, alarms)."""
    rng = random.Random(2026)
    profiles = [sensors.profile_for(7, i) for i in range(devices)]
    steps = int(seconds * rate)
    alarms = n = 0
    batch: list[Record] = []
    for step in range(steps):
        t = step / rate
        ts = T0 + int(t * 1000)
        for i, p in enumerate(profiles):
            dev = f"dev-{i:05d}"
            values = sensors.reading(p, t, step)
            if rng.random() < ALARM_RATIO:
                msg = payloads.alarm(dev, step, ts, sensors.alarm_for(p, values), values)
                alarms += 1
            else:
                msg = payloads.telemetry(dev, step, ts, p.kind, values)
            body = payloads.encode(msg, "json")
            batch.append(Record(dev.encode(), body, ts, (
                ("content-type", b"application/json"), ("seq", b"%d" % step),
                ("device-ts", b"%d" % ts))))
            n += 1
            if len(batch) >= 5000:
                raw.log.append(batch)
                batch = []
    end = T0 + (seconds + 120) * 1000  # one reading a window later closes every window
    batch.append(Record(b"tick", json.dumps({"ts": end}).encode(), end, ()))
    raw.log.append(batch)
    raw.log.flush()
    return n + 1, alarms


def uplink_cost(store: StreamStore) -> tuple[int, int, float]:
    """(records, encoded bytes, CPU seconds) to cut a log into zstd uplink batches."""
    lg = store.log
    pos, total, records = lg.start_offset, 0, 0
    c0 = time.process_time()
    while pos < lg.end_offset:
        res = fetch_columns(lg, pos, max_records=5000, max_bytes=1 << 20)
        block = block_of(res.columns)
        batch = Batch.trusted("bench", store.config.name, store.generation, pos,
                              res.next_offset - 1, block)
        body, _ = encode_batch(batch, "zstd")
        total += len(body)
        records += len(block)
        pos = res.next_offset
    return records, total, time.process_time() - c0


def scenario(root: Path, devices: int, rate: float, seconds: int,
             transforms: list[dict[str, Any]] = TRANSFORMS) -> dict[str, Any]:
    data = root / f"d{devices}-{rate:g}-{len(transforms)}"
    cfg = config(data, transforms)
    raw = open_stream(cfg, cfg.streams[0])
    readings, alarms = fill(raw, devices, rate, seconds)
    outs = {sc.name: open_stream(cfg, sc) for sc, _ in derived_streams(cfg)}
    runner = TransformRunner(raw, cfg.streams[0].transforms, "telemetry-edge", outs,
                             forward_raw=False)
    w0, c0 = time.perf_counter(), time.process_time()
    while runner.step():
        pass
    for o in outs.values():
        o.log.flush()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    _n, raw_bytes, raw_cpu = uplink_cost(raw)
    derived_bytes = derived_cpu = 0.0
    for o in outs.values():
        _m, b, c = uplink_cost(o)
        derived_bytes += b
        derived_cpu += c
    st = runner.status()
    got_alarms = st["outputs"]["alarms"]
    for s in (raw, *outs.values()):
        s.log.close()
    shutil.rmtree(data)
    chain = "+".join(t["type"] for t in transforms)
    return {"fleet": f"{devices} devices x {rate:g}/s, {seconds} s, {chain}",
            "readings": readings,
            "alarms": alarms, "alarms_delivered": got_alarms, "records_out": st["records_out"],
            "raw_bytes": raw_bytes, "derived_bytes": int(derived_bytes),
            "ratio": raw_bytes / derived_bytes, "rate": readings / wall,
            "cpu_rate": readings / cpu,
            "transform_us": cpu / readings * 1e6,
            "forward_raw_us": raw_cpu / readings * 1e6,
            "forward_derived_us": derived_cpu / readings * 1e6,
            "windows": sum(t["windows"] for t in st["transforms"])}


def main() -> None:
    plot_printed_tables("edge_transforms")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    div = 10 if args.quick else 1
    root = Path(tempfile.mkdtemp(prefix="edge-transforms-", dir=args.dir))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    try:
        for devices, rate, seconds, chain in ((500, 1.0, 600 // div, TRANSFORMS),
                                              (50, 10.0, 600 // div, TRANSFORMS),
                                              (500, 1.0, 600 // div, WINDOW_ONLY)):
            r = scenario(root, devices, rate, seconds, chain)
            rows.append(r)
            print(json.dumps(r))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| fleet | readings | raw uplink bytes | derived uplink bytes | reduction "
          "| alarms delivered | transform readings/s (per CPU-s) | transform CPU µs/rdg "
          "| raw forwarding CPU µs/rdg | derived forwarding CPU µs/rdg |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['fleet']} | {r['readings']:,} | {r['raw_bytes']:,} | "
              f"{r['derived_bytes']:,} | {r['ratio']:.1f}x | "
              f"{r['alarms_delivered']}/{r['alarms']} | {r['rate']:,.0f} ({r['cpu_rate']:,.0f}) | "
              f"{r['transform_us']:.2f} | {r['forward_raw_us']:.2f} | "
              f"{r['forward_derived_us']:.3f} |")
    judged = [r for r in rows if "deadband" in r["fleet"]]  # the configuration
    ok_ratio = all(r["ratio"] >= 20 for r in judged)
    ok_rate = all(r["rate"] >= 200_000 for r in judged)
    ok_alarms = all(r["alarms_delivered"] == r["alarms"] for r in rows)
    print("\ntargets (route+deadband+window rows): reduction >= 20x "
          f"{'met' if ok_ratio else 'MISSED'}; "
          f">= 200k readings/s {'met' if ok_rate else 'MISSED'}; every alarm "
          f"{'met' if ok_alarms else 'MISSED'}")


if __name__ == "__main__":
    main()
