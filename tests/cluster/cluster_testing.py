"""Helpers for cluster fault tests: broker nodes over JetStream, a group reading through
one address, the store read back over HTTP, and a watch on the group's committed offsets.

Strategy: the verdicts come from the data, as in tests/helpers_uplink.py. What the
cluster stored is read back through a broker node's consume API (every record carries
its ``origin`` header), then judged by the same ``verify_cloud``. Whether committed
offsets ever moved backwards is judged from the group's own record in the JetStream KV
bucket, watched from the start of the run: every stored revision is seen, whichever node
stored it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats

from cloud_broker.client import BrokerClient, Consumer
from cloud_broker.groups.kv_backend import DEFAULT_BUCKET, decode, key_of
from cloud_broker.ingest import parse_origin
from tests.helpers import Server, free_port
from tests.helpers_uplink import CloudRecord, CloudView

TOPIC = "telemetry"
PARTITIONS = 4


def write_cluster_config(tmp: Path, port: int, nats_urls: list[str],
                         replicas: int = 3) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    servers = ", ".join(f'"{u}"' for u in nats_urls)
    path = tmp / "cloud.toml"
    path.write_text(
        f'data_dir = "{tmp / "data"}"\nlisten = "127.0.0.1:{port}"\n\n'
        f'[storage]\nbackend = "jetstream"\n\n'
        f"[storage.jetstream]\nservers = [{servers}]\nreplicas = {replicas}\n\n"
        "[auth]\nrequired = false\n\n"
        f"[topics.{TOPIC}]\npartitions = {PARTITIONS}\n")
    return path


def cluster_broker(tmp: Path, nats_urls: list[str], replicas: int = 3) -> Server:
    """A ``cloud-broker serve`` node on the JetStream store; ``kill()`` + ``start()`` to
    bring it back on the same port."""
    port = free_port()
    cfg = write_cluster_config(tmp, port, nats_urls, replicas)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return Server([sys.executable, "-m", "cloud_broker.cli", "serve", "--config", str(cfg)],
                  port, tmp / "broker.out", env=env, ready=ready, ready_timeout=60)


async def read_cloud_http(url: str, topic: str = TOPIC,
                          partitions: int = PARTITIONS) -> CloudView:
    """Every record of ``topic`` as one broker node serves it."""
    view = CloudView()
    client = BrokerClient(url, retry_for_s=30)
    try:
        for p in range(partitions):
            offset = 0
            while True:
                res = await client.fetch(topic, p, offset, max_records=5000, wait_ms=0)
                for r in res.records:
                    origin = dict(r.headers).get("origin")
                    parsed = parse_origin(origin) if origin is not None else None
                    assert parsed is not None, f"{topic}/{p}@{r.offset}: no origin header"
                    view.records.append(CloudRecord(p, r.offset, parsed[0], parsed[1],
                                                    r.key, r.value))
                if not res.records:
                    break
                offset = res.records[-1].offset + 1
    finally:
        await client.close()
    return view


@dataclass
class GroupRun:
    """What the members of one group processed and had committed."""

    processed: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)


async def group_member(url: str, group: str, run: GroupRun, stop: asyncio.Event,
                       session_ms: int = 3000) -> None:
    """One member reading ``TOPIC`` through ``url`` until ``stop`` (auto-commit)."""
    consumer = Consumer(url, group=group, topics=[TOPIC], session_timeout_ms=session_ms,
                        auto_commit_interval_ms=300, wait_ms=300, max_records=500,
                        retry_for_s=120)

    async def read() -> None:
        async for r in consumer:
            run.processed[r.partition].append(r.offset)

    task = asyncio.create_task(read())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
        if task.done() and task.exception() is not None:
            exc = task.exception()
            run.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for t in (task, stopping):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await consumer.close()


class OffsetWatch:
    """Every revision of a group's record in the KV bucket, as (partition -> offset)."""

    def __init__(self, nats_urls: list[str], group: str) -> None:
        self.urls = nats_urls
        self.group = group
        self.history: list[dict[int, int]] = []
        self._task: asyncio.Task[None] | None = None
        self._nc: Any = None

    async def start(self) -> OffsetWatch:
        self._nc = await nats.connect(self.urls, max_reconnect_attempts=-1)
        js = self._nc.jetstream()
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # the bucket appears with the first broker node
            try:
                kv = await js.key_value(DEFAULT_BUCKET)
                break
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        watcher = await kv.watch(key_of(self.group))
        self._task = asyncio.create_task(self._run(watcher))
        return self

    async def _run(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None or not entry.value:
                continue
            record = decode(entry.key, entry.value)
            assert record is not None, f"unreadable group record {entry.value!r}"
            self.history.append({int(p): int(o) for _, p, o in record.get("offsets", [])})

    def moved_backwards(self) -> list[str]:
        found = []
        last: dict[int, int] = {}
        for i, offs in enumerate(self.history):
            for p, o in offs.items():
                if o < last.get(p, -1):
                    found.append(f"revision #{i}: partition {p} went from {last[p]} to {o}")
                last[p] = max(o, last.get(p, -1))
            for p in last:
                if p not in offs:
                    found.append(f"revision #{i}: partition {p} lost its offset")
        return found

    async def caught_up(self, want: dict[int, int], timeout_s: float = 30.0) -> None:
        """Wait until the watch has seen the revision ``want`` (a watch delivers the
        last revisions a little after the writes that made them)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not (self.history and self.history[-1] == want):
            if asyncio.get_running_loop().time() > deadline:
                last = self.history[-1] if self.history else None
                raise AssertionError(f"the watch never saw {want}; last seen {last}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            await self._nc.close()


def committed_json(url: str, group: str) -> dict[int, int]:
    r = httpx.get(f"{url}/v1/groups/{group}/offsets", timeout=5)
    r.raise_for_status()
    return {o["partition"]: o["offset"] for o in json.loads(r.text)["offsets"]}
