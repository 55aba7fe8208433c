"""Consumers against a real broker subprocess (uvicorn on loopback).

Order and completeness across partitions, long-poll wake-up, a live SSE stream, retention
and 416, the Python client's iteration and the ``cloud-broker consume`` command.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from consume_testing import Ingester, check_complete_and_ordered, read_all, url_of, values

from cloud_broker.client import Consumer, OffsetOutOfRangeError
from tests.helpers import Server, broker_server, wait_for

pytestmark = pytest.mark.timeout(120)


def _waiting(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    m = re.search(r"^broker_fetch_waiting (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_every_record_from_every_partition_in_device_order(broker: Server) -> None:
    url = url_of(broker)
    ing = Ingester(url)
    ing.send(devices=60, per_device=25, batch_size=333)
    ing.send(devices=60, per_device=5, batch_size=97)
    by_partition = read_all(url, "telemetry", 8)
    assert sum(len(v) for v in by_partition.values()) == 60 * 30
    assert all(by_partition[p] for p in range(8)), "some partition got no device"
    check_complete_and_ordered(by_partition, {d: 30 for d in range(60)})
    meta = httpx.get(f"{url}/v1/topics/telemetry", timeout=5).json()
    assert [p["end_offset"] for p in meta["partitions"]] == [
        len(by_partition[p]) for p in range(8)]


def test_long_poll_returns_when_data_arrives(broker: Server) -> None:
    url = url_of(broker)
    ing = Ingester(url)
    ing.send(devices=1, per_device=3)
    part = next(p["partition"] for p in httpx.get(f"{url}/v1/topics/telemetry").json()[
        "partitions"] if p["end_offset"] == 3)
    result: dict[str, object] = {}

    def poll() -> None:
        t = time.monotonic()
        r = httpx.get(f"{url}/v1/topics/telemetry/partitions/{part}/records",
                      params={"offset": 3, "wait_ms": 30000},
                      headers={"Accept": "application/json"}, timeout=60)
        result.update(elapsed=time.monotonic() - t, body=r.json(), status=r.status_code)

    th = threading.Thread(target=poll)
    th.start()
    wait_for(lambda: _waiting(url) >= 1, message="the long-poll to park")
    ing.send(devices=1, per_device=2)
    th.join(40)
    assert result["status"] == 200
    body = result["body"]
    assert [r["offset"] for r in body["records"]][:1] == [3]  # type: ignore[index]
    assert result["elapsed"] < 15, "long-poll did not return when data arrived"  # 30 s cap
    assert _waiting(url) == 0


def test_long_poll_times_out_empty(broker: Server) -> None:
    url = url_of(broker)
    r = httpx.get(f"{url}/v1/topics/telemetry/partitions/0/records",
                  params={"offset": 0, "wait_ms": 300}, headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r.json()["records"] == [] and r.json()["next_offset"] == 0


def test_stream_follows_a_growing_partition(broker: Server) -> None:
    url = url_of(broker)
    ing = Ingester(url)
    ing.send(devices=1, per_device=10)
    part = next(p["partition"] for p in httpx.get(f"{url}/v1/topics/telemetry").json()[
        "partitions"] if p["end_offset"])
    seqs: list[int] = []
    ids: list[int] = []
    ingested = 10
    with httpx.stream("GET", f"{url}/v1/topics/telemetry/partitions/{part}/stream",
                      params={"offset": 0, "encoding": "utf8", "keepalive_ms": 200},
                      timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in resp.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                k, _, v = line.partition(":")
                event[k] = v.strip()
                continue
            if line or "data" not in event:
                continue
            assert event["event"] == "records"
            data = json.loads(event["data"])
            seqs += [json.loads(r["value"])["seq"] for r in data["records"]]
            ids.append(int(event["id"]))
            assert int(event["id"]) == data["next_offset"]
            event = {}
            if len(seqs) >= 40:
                break
            if len(seqs) == ingested:  # caught up: the partition grows while we follow it
                ing.send(devices=1, per_device=10)
                ingested += 10
    assert seqs == list(range(40))
    assert ids == sorted(ids) and ids[-1] == 40


def test_stream_resumes_from_last_event_id(broker: Server) -> None:
    url = url_of(broker)
    Ingester(url).send(devices=1, per_device=6)
    part = next(p["partition"] for p in httpx.get(f"{url}/v1/topics/telemetry").json()[
        "partitions"] if p["end_offset"])
    with httpx.stream("GET", f"{url}/v1/topics/telemetry/partitions/{part}/stream",
                      headers={"Last-Event-ID": "4"}, timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                assert [r["offset"] for r in json.loads(line[5:])["records"]] == [4, 5]
                break


def test_retention_deletes_segments_and_answers_416(tmp_path: Path) -> None:
    extra = ("retention_check_ms = 50\n[topics.small]\npartitions = 1\n"
             "segment_bytes = 4096\nretention_bytes = 8192")
    server = broker_server(tmp_path / "b", topics={}, extra=extra).start()
    try:
        url = url_of(server)
        Ingester(url, topic="small").send(devices=1, per_device=400, batch_size=20)

        def start() -> int:
            return httpx.get(f"{url}/v1/topics/small").json()["partitions"][0]["start_offset"]
        first = wait_for(start, message="retention to delete a segment")
        r = httpx.get(f"{url}/v1/topics/small/partitions/0/records", params={"offset": 0})
        assert r.status_code == 416
        body = r.json()
        assert body["field"] == "offset" and body["start_offset"] >= first
        assert body["end_offset"] == 400
        ok = httpx.get(f"{url}/v1/topics/small/partitions/0/records",
                       params={"offset": body["start_offset"]},
                       headers={"Accept": "application/json"})
        assert ok.status_code == 200 and ok.json()["records"]

        async def client_side() -> tuple[int, list[tuple[str, int, int, int]]]:
            consumer = Consumer(url, topics=["small"], start=0, wait_ms=0)
            with pytest.raises(OffsetOutOfRangeError) as exc_info:
                await consumer.fetch("small", 0, 0)
            assert exc_info.value.start_offset >= body["start_offset"]
            async with consumer:  # iteration skips ahead to the start, and says so
                first = await consumer.__anext__()
                return first.offset, consumer.skipped
        offset, skipped = asyncio.run(client_side())
        assert offset >= body["start_offset"]
        assert skipped and skipped[0][2] == 0 and skipped[0][3] == offset - 1
    finally:
        server.stop()


def test_consumer_iterates_every_partition_without_group(broker: Server) -> None:
    url = url_of(broker)
    Ingester(url).send(devices=20, per_device=10)

    async def run() -> list[tuple[int, int]]:
        out = []
        async with Consumer(url, topics=["telemetry"], max_records=7, wait_ms=200) as c:
            async for r in c:
                out.append(r)
                if len(out) == 200:
                    break
        return values(out)
    got = asyncio.run(run())
    assert sorted(got) == sorted((d, s) for d in range(20) for s in range(10))
    for d in range(20):  # per-device order as delivered
        assert [s for dd, s in got if dd == d] == list(range(10))


def test_cli_consume_prints_json_lines(broker: Server) -> None:
    url = url_of(broker)
    Ingester(url).send(devices=5, per_device=4)
    out = subprocess.run(
        [sys.executable, "-m", "cloud_broker.cli", "consume", "--url", url, "--topic",
         "telemetry", "--group", "cli", "--limit", "20"],
        capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 20
    assert {(json.loads(x["value"])["d"], json.loads(x["value"])["seq"]) for x in lines} == {
        (d, s) for d in range(5) for s in range(4)}
    assert all(x["encoding"] == "utf8" and x["topic"] == "telemetry" for x in lines)
    group = httpx.get(f"{url}/v1/groups/cli").json()
    assert sum(o["offset"] for o in group["offsets"]) == 20  # committed on exit
    assert group["members"] == []  # and left the group


def test_consumer_rides_out_a_broker_kill_and_restart(tmp_path: Path) -> None:
    server = broker_server(tmp_path / "b").start()
    try:
        url = url_of(server)
        ing = Ingester(url)
        ing.send(devices=8, per_device=10)

        def restart() -> None:
            server.kill()  # SIGKILL: the consumer's requests in flight are cut
            server.start()
            ing.send(devices=8, per_device=10)

        async def run() -> set[tuple[int, int]]:
            seen: set[tuple[int, int]] = set()
            async with Consumer(url, topics=["telemetry"], group="rc", wait_ms=200,
                                auto_commit_interval_ms=100) as consumer:
                while len(seen) < 80:
                    seen |= set(values([await consumer.__anext__()]))
                await asyncio.to_thread(restart)
                while len(seen) < 160:
                    record = await asyncio.wait_for(consumer.__anext__(), 60)
                    seen |= set(values([record]))
            return seen

        seen = asyncio.run(run())
        assert seen == {(d, s) for d in range(8) for s in range(20)}
        group = httpx.get(f"{url}/v1/groups/rc").json()
        assert group["members"] == [] and sum(o["offset"] for o in group["offsets"]) == 160
    finally:
        server.stop()
