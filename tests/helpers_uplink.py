"""Helpers for uplink tests: edge stores to fill, a cloud to read back, the G3/G4 verdict.

Strategy: every uplink test ends with the same question, "is every edge record in the
cloud exactly once, in one partition, in per-device order?", so the answer is computed
in one place (``verify_cloud``) from the data itself: the ``origin`` header each stored
record carries (edge/stream/generation/offset) and the edge payload, which holds the
device's own sequence number. Cloud partitions are read with ``Log(read_only=True)``
after the broker stopped, or from a live ``PartitionStore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cloud_broker.ingest import ORIGIN_HEADER, Ingestor, IngestUnavailable, parse_origin
from cloud_broker.storage import UnknownTopic
from edge_agent.config import EdgeConfig, StreamConfig, UplinkConfig
from edge_agent.forwarder import Forwarder
from edge_agent.streams import StreamStore, open_stream
from edge_agent.uplink_http import FatalUplinkError, MemoryUplink, RetryableUplinkError
from shared_log import Log, Record, StoredRecord
from uplink import Ack, Batch, Refusal

from .helpers import REPO

Source = tuple[str, str, str]


def stream_config(name: str = "telemetry", priority: int = 5, **kwargs: object) -> StreamConfig:
    return StreamConfig(name=name, topics=(f"devices/+/{name}",), priority=priority,
                        **kwargs)  # type: ignore[arg-type]


def edge_config(data_dir: Path, streams: Iterable[StreamConfig] | None = None,
                edge_id: str = "edge-1", **uplink: object) -> EdgeConfig:
    """An EdgeConfig for tests; ``uplink`` keywords go to UplinkConfig (no linger)."""
    uplink.setdefault("linger_ms", 0.0)
    uplink.setdefault("min_batch_linger_ms", 0.0)
    uplink.setdefault("retry_max_s", 0.2)
    return EdgeConfig(edge_id=edge_id, data_dir=data_dir,
                      streams=tuple(streams or (stream_config(),)),
                      uplink=UplinkConfig(**uplink))  # type: ignore[arg-type]


def reading(device: int, seq: int, size: int = 0) -> Record:
    """One device reading; the value carries the device's sequence number."""
    value = b'{"d":%d,"seq":%d}' % (device, seq)
    if size > len(value):
        value += b" " * (size - len(value))
    return Record(b"dev-%05d" % device, value, 1_700_000_000_000 + seq, ())


def fill(store: StreamStore, count: int, devices: int, *, start: int = 0, size: int = 0,
         chunk: int = 5000) -> None:
    """Append ``count`` readings round-robin over ``devices``; reading i has seq i."""
    log = store.log
    for lo in range(start, start + count, chunk):
        hi = min(lo + chunk, start + count)
        log.append([reading(i % devices, i, size) for i in range(lo, hi)])
    log.flush()


def open_edge(cfg: EdgeConfig, name: str = "telemetry") -> StreamStore:
    return open_stream(cfg, cfg.stream(name))


@dataclass
class CloudRecord:
    partition: int
    position: int  # offset in the partition
    source: Source
    edge_offset: int
    key: bytes
    value: bytes


@dataclass
class CloudView:
    """What a topic holds, grouped for the checks."""

    records: list[CloudRecord] = field(default_factory=list)

    def by_source(self) -> dict[Source, list[CloudRecord]]:
        out: dict[Source, list[CloudRecord]] = defaultdict(list)
        for r in self.records:
            out[r.source].append(r)
        return out


def _origin(rec: StoredRecord) -> tuple[Source, int]:
    # The broker's own origin is the record's last header (cloud_broker.ingest).
    if rec.headers and rec.headers[-1][0] == ORIGIN_HEADER:
        parsed = parse_origin(rec.headers[-1][1])
        assert parsed is not None, f"unreadable origin header {rec.headers[-1][1]!r}"
        return parsed
    raise AssertionError(f"record at {rec.offset} has no origin header")


def read_logs(logs: dict[int, Log]) -> CloudView:
    view = CloudView()
    for index, log in sorted(logs.items()):
        offset = log.start_offset
        while offset < log.end_offset:
            res = log.fetch(offset, max_records=50_000, max_bytes=64 << 20)
            for rec in res.records:
                src, eoff = _origin(rec)
                view.records.append(CloudRecord(index, rec.offset, src, eoff, rec.key, rec.value))
            assert not res.skipped, f"partition {index}: corrupt ranges {res.skipped}"
            if res.next_offset <= offset:
                break
            offset = res.next_offset
    return view


def read_cloud(data_dir: Path, topic: str = "telemetry") -> CloudView:
    """Read a stopped broker's topic from its data dir, read-only."""
    tdir = Path(data_dir) / "topics" / topic
    logs = {int(p.name): Log(p, read_only=True) for p in tdir.iterdir()
            if p.is_dir() and p.name.isdigit()}
    try:
        return read_logs(logs)
    finally:
        for log in logs.values():
            log.close()


def seq_of(value: bytes) -> int:
    return json.loads(value)["seq"]


def verify_cloud(view: CloudView, expected: dict[Source, Iterable[int]]) -> None:
    """G3 + G4: each expected (source, edge offset) exactly once; one partition per device;
    per device, increasing edge offsets and sequence numbers in partition order."""
    by_source = view.by_source()
    assert set(by_source) == set(expected), (
        f"sources in the cloud {sorted(by_source)} != expected {sorted(expected)}")
    for src, want in expected.items():
        got = [r.edge_offset for r in by_source[src]]
        counts: dict[int, int] = defaultdict(int)
        for off in got:
            counts[off] += 1
        dups = sorted(o for o, c in counts.items() if c > 1)
        assert not dups, f"{src}: {len(dups)} edge offsets stored twice, e.g. {dups[:10]}"
        want_set = set(want)
        missing = sorted(want_set - counts.keys())
        extra = sorted(counts.keys() - want_set)
        assert not missing, f"{src}: {len(missing)} records missing, e.g. {missing[:10]}"
        assert not extra, f"{src}: {len(extra)} unexpected records, e.g. {extra[:10]}"
    partition_of: dict[bytes, int] = {}
    last: dict[tuple[Source, bytes], tuple[int, int]] = {}
    for r in sorted(view.records, key=lambda r: (r.partition, r.position)):
        p = partition_of.setdefault(r.key, r.partition)
        assert p == r.partition, f"device {r.key!r} in partitions {p} and {r.partition}"
        seq = seq_of(r.value)
        prev = last.get((r.source, r.key))
        if prev is not None:
            assert r.edge_offset > prev[0] and seq > prev[1], (
                f"device {r.key!r}: offset {r.edge_offset} (seq {seq}) after {prev}")
        last[(r.source, r.key)] = (r.edge_offset, seq)


def run_forwarder_cmd(edge_toml: Path) -> list[str]:
    """The command line of tests/edge_agent/forwarder_runner.py for ``edge_toml``."""
    return [sys.executable, str(REPO / "tests" / "edge_agent" / "forwarder_runner.py"),
            str(edge_toml)]


def subprocess_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_edge_toml(path: Path, data_dir: Path, url: str, *, edge_id: str = "edge-1",
                    token: str | None = None, extra_uplink: str = "",
                    streams: str = "") -> Path:
    """An edge.toml with one ``telemetry`` stream unless ``streams`` is given."""
    streams = streams or ('[[streams]]\nname = "telemetry"\ntopics = ["devices/+/telemetry"]\n')
    tok = f'token = "{token}"\n' if token else ""
    path.write_text(
        f'edge_id = "{edge_id}"\ndata_dir = "{data_dir}"\n\n'
        f'[uplink]\nurl = "{url}"\n{tok}linger_ms = 0\nmin_batch_linger_ms = 0\n'
        f'retry_max_s = 0.2\n{extra_uplink}\n'
        f"{streams}"
    )
    return path


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(), check=False)


# -- in-process cloud and forwarder ----------------------------------------------------


def memory_uplink(ingestor: Ingestor) -> MemoryUplink:
    """A MemoryUplink into an Ingestor, mapping its errors as the HTTP adapter does."""

    async def handler(topic: str, batch: Batch) -> Ack | Refusal:
        try:
            return await ingestor.ingest(topic, batch)
        except IngestUnavailable as exc:
            raise RetryableUplinkError(str(exc)) from exc
        except UnknownTopic as exc:
            raise FatalUplinkError(404, str(exc)) from exc

    return MemoryUplink(handler)


async def run_until(fwd: Forwarder, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run ``fwd.run()`` until ``cond()`` is true (fail after ``timeout``), then stop it."""
    task = asyncio.create_task(fwd.run(persist_interval_s=0.1))
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            if task.done():
                task.result()
                raise AssertionError("the forwarder stopped before the condition held")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for the forwarder")
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
