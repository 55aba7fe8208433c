"""Helpers for the edge-processing tests: a config with every kind of transform, raw
readings from a seeded generator, and the stores and runner over a data directory."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from edge_agent_testing import read_stream

from edge_agent.config import EdgeConfig, parse_config
from edge_agent.edgeproc import derived_streams
from edge_agent.streams import StreamStore, open_stream
from edge_agent.transforms import TransformRunner
from shared_log import Record

TRANSFORMS = [
    {"type": "route", "expr": "alarm", "to": "alarms", "priority": 0},
    {"type": "filter", "expr": "v > `-90`"},
    {"type": "deadband", "field": "v", "threshold": 1.5, "heartbeat_s": 3},
    {"type": "window", "size_s": 2, "lateness_s": 0.5, "fields": ["v"],
     "aggregates": ["count", "min", "max", "mean", "first", "last"]},
]


def config(data: Path, transforms: list[dict[str, Any]] | None = None,
           segment_bytes: int = 16 << 20) -> EdgeConfig:
    return parse_config({"edge_id": "gw", "data_dir": str(data), "streams": [
        {"name": "telemetry", "topics": ["devices/+/telemetry"], "forward": False,
         "segment_bytes": segment_bytes,
         "transforms": TRANSFORMS if transforms is None else transforms}]})


def readings(n: int, devices: int = 8, seed: int = 7) -> list[Record]:
    """Reading i: device d<i % devices>, event time ~50 ms apart with jitter (some late),
    a random walk ``v``, an alarm now and then."""
    rng = random.Random(seed)
    walk = [20.0] * devices
    out = []
    for i in range(n):
        d = i % devices
        walk[d] += rng.uniform(-1, 1)
        ts = (i // devices) * 50 - rng.choice((0, 0, 0, 0, 700))
        doc = {"seq": i, "ts": ts, "v": round(walk[d], 3), "alarm": rng.random() < 0.002}
        out.append(Record(f"d{d}".encode(), json.dumps(doc).encode(), ts, ()))
    return out


def open_all(data: Path, batch: int = 2000, transforms: list[dict[str, Any]] | None = None,
             segment_bytes: int = 16 << 20
             ) -> tuple[EdgeConfig, TransformRunner, StreamStore, dict[str, StreamStore]]:
    cfg = config(data, transforms, segment_bytes)
    raw = open_stream(cfg, cfg.streams[0])
    outs = {sc.name: open_stream(cfg, sc) for sc, _ in derived_streams(cfg)}
    runner = TransformRunner(raw, cfg.streams[0].transforms, cfg.streams[0].derived, outs,
                             forward_raw=False, batch=batch)
    return cfg, runner, raw, outs


def write_raw(data: Path, n: int, segment_bytes: int = 16 << 20) -> None:
    cfg = config(data, segment_bytes=segment_bytes)
    raw = open_stream(cfg, cfg.streams[0])
    recs = readings(n)
    for i in range(0, n, 5000):
        raw.log.append(recs[i:i + 5000])
    raw.log.flush()
    raw.log.close()


def derived(data: Path, name: str) -> list[tuple[bytes, bytes, int, Any]]:
    """A derived stream's records as (key, value, timestamp, headers)."""
    return [(r.key, r.value, r.timestamp, r.headers) for r in read_stream(data, name)]


def run_to_end(data: Path, transforms: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the transforms over everything in ``data``, uninterrupted; their status."""
    _cfg, runner, raw, outs = open_all(data, transforms=transforms)
    while runner.step():
        pass
    runner.checkpoint_now()
    status = runner.status()
    raw.log.close()
    for o in outs.values():
        o.log.close()
    return status
