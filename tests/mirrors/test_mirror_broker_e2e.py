"""Mirrors in real processes: inside a broker (cloud.toml), through the admin API, and as
``cloud-broker mirror`` reading a broker over HTTP, SIGKILLed while edges keep ingesting.

Everything is read back through the consumer API of real brokers, so "byte for byte, same
offsets" is checked the way a consumer would see it.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mirror_testing import kill9

from cloud_broker.client import BrokerClient
from tests.helpers import broker_server, free_port, wait_for
from uplink import Batch, UplinkRecord, encode_batch

pytestmark = pytest.mark.timeout(180)
TOKEN = "all-powers-token"
READER = "read-only-token"
TOKENS = [{"token": TOKEN, "permissions": ["ingest", "read", "admin"]},
          {"token": READER, "permissions": ["read"]}]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ingest(url: str, edge: str, first: int, n: int) -> None:
    """Edge ``edge`` sends records [first, first + n) of its stream to topic telemetry."""
    recs = tuple(UplinkRecord(i, b"dev-%03d" % (i % 37), 1_700_000_000_000 + i,
                              json.dumps({"seq": i, "t": i % 30}).encode())
                 for i in range(first, first + n))
    body, enc = encode_batch(Batch(edge, "telemetry", "gen1", first, first + n - 1, recs))
    r = httpx.post(f"{url}/v1/ingest/telemetry", content=body, timeout=10,
                   headers={**AUTH, "Content-Type": "application/cbor",
                            "Content-Encoding": enc})
    assert r.status_code == 200, r.text


def read_all(url: str, partitions: int, token: str = TOKEN) -> dict[int, list[tuple]]:
    async def main() -> dict[int, list[tuple]]:
        client = BrokerClient(url, token, retry_for_s=10)
        out: dict[int, list[tuple]] = {}
        try:
            for p in range(partitions):
                rows: list[tuple] = []
                offset = (await client.topic("telemetry"))["partitions"][p]["start_offset"]
                while True:
                    res = await client.fetch("telemetry", p, offset, 5000)
                    rows += [(r.offset, r.key, r.value, r.timestamp, r.headers)
                             for r in res.records]
                    if res.next_offset >= res.end_offset:
                        break
                    offset = res.next_offset
                out[p] = rows
        finally:
            await client.close()
        return out
    return asyncio.run(main())


def mirrors_status(url: str) -> dict[str, dict]:
    r = httpx.get(f"{url}/v1/mirrors", headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()["mirrors"]}


def test_broker_runs_configured_mirrors_and_reports_lag(tmp_path: Path) -> None:
    target = broker_server(tmp_path / "dr", topics={"telemetry": 4}, tokens=TOKENS).start()
    dr = f"http://127.0.0.1:{target.port}"
    extra = (f'[mirrors.dr]\ntopic = "telemetry"\ntarget = "broker"\nurl = "{dr}"\n'
             f'token = "{TOKEN}"\nwait_ms = 200\n'
             f'[mirrors.archive]\ntopic = "telemetry"\ntarget = "sql"\n'
             f'path = "{tmp_path / "archive.db"}"\nwait_ms = 200\n')
    source = broker_server(tmp_path / "src", topics={"telemetry": 4}, tokens=TOKENS,
                           extra=extra).start()
    src = f"http://127.0.0.1:{source.port}"
    try:
        for b in range(10):
            ingest(src, "gw-1", b * 50, 50)

        def caught_up() -> bool:
            st = mirrors_status(src)
            return all(st[n]["lag"] == 0 and len(st[n]["partitions"]) == 4
                       and sum(p["end_offset"] for p in st[n]["partitions"]) == 500
                       for n in ("dr", "archive"))
        wait_for(caught_up, timeout=30, interval=0.1, message="mirrors to catch up")
        assert read_all(dr, 4) == read_all(src, 4)
        status = mirrors_status(src)
        assert status["dr"]["token"] == "***" and status["dr"]["source"] == "config"
        metrics = httpx.get(f"{src}/metrics", timeout=5).text
        assert 'broker_mirror_lag_records{mirror="dr",partition="0",topic="telemetry"} 0.0' \
            in metrics
        assert 'broker_mirror_records_total{mirror="archive"' in metrics

        # The admin API: add a mirror, see it, delete it; config mirrors stay.
        body = {"name": "extra", "topic": "telemetry", "target": "sql",
                "path": str(tmp_path / "extra.db"), "wait_ms": 200}
        r = httpx.post(f"{src}/v1/mirrors", json=body, timeout=5,
                       headers={"Authorization": f"Bearer {READER}"})
        assert r.status_code == 403
        r = httpx.post(f"{src}/v1/mirrors", json={**body, "replicas": 3}, headers=AUTH)
        assert r.status_code == 400 and r.json()["field"] == "replicas"
        r = httpx.post(f"{src}/v1/mirrors", json=body, headers=AUTH, timeout=5)
        assert r.status_code == 201, r.text
        assert httpx.post(f"{src}/v1/mirrors", json=body, headers=AUTH).status_code == 409
        wait_for(lambda: mirrors_status(src)["extra"]["lag"] == 0, timeout=30, interval=0.1)
        assert mirrors_status(src)["extra"]["source"] == "api"
        source.stop()  # an API mirror survives a restart (stored in mirrors.db)
        source.start()
        assert "extra" in mirrors_status(src)
        assert httpx.delete(f"{src}/v1/mirrors/dr", headers=AUTH).status_code == 409
        assert httpx.delete(f"{src}/v1/mirrors/extra", headers=AUTH).status_code == 204
        assert httpx.delete(f"{src}/v1/mirrors/extra", headers=AUTH).status_code == 404
        assert set(mirrors_status(src)) == {"dr", "archive"}
    finally:
        source.stop()
        target.stop()


def test_standalone_mirror_over_http_survives_kill9_while_edges_ingest(tmp_path: Path) -> None:
    source = broker_server(tmp_path / "src", topics={"telemetry": 3}, tokens=TOKENS).start()
    target = broker_server(tmp_path / "dr", topics={"telemetry": 3}, tokens=TOKENS).start()
    src = f"http://127.0.0.1:{source.port}"
    dr = f"http://127.0.0.1:{target.port}"
    cfg = tmp_path / "mirror.toml"
    metrics_port = free_port()
    cfg.write_text(f'data_dir = "{tmp_path / "mirror-data"}"\nlisten = "127.0.0.1:{source.port}"'
                   f'\n[mirrors.dr]\ntopic = "telemetry"\ntarget = "broker"\nurl = "{dr}"\n'
                   f'token = "{TOKEN}"\nrun = "standalone"\nbatch_records = 30\n'
                   'wait_ms = 200\nmax_backoff_s = 0.5\n'
                   '[auth]\nrequired = false\n')  # of the mirror's own /v1/mirrors
    log = tmp_path / "mirror.out"
    rng = random.Random(66)
    sent = 0
    try:
        def start() -> subprocess.Popen[bytes]:
            with open(log, "ab") as out:
                return subprocess.Popen(
                    [sys.executable, "-m", "cloud_broker.cli", "mirror", "--config", str(cfg),
                     "--token", TOKEN, "--listen", f"127.0.0.1:{metrics_port}"],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        for _ in range(4):
            proc = start()
            deadline = time.monotonic() + rng.uniform(0.8, 1.6)
            while time.monotonic() < deadline:
                ingest(src, "gw-2", sent, 40)
                sent += 40
            kill9(proc)
        proc = start()
        try:
            ingest(src, "gw-2", sent, 40)
            sent += 40

            def caught_up() -> bool:
                try:
                    st = httpx.get(f"http://127.0.0.1:{metrics_port}/v1/mirrors",
                                   headers=AUTH, timeout=2).json()["mirrors"][0]
                except (httpx.HTTPError, ValueError, IndexError):
                    return False
                return (st["lag"] == 0 and len(st["partitions"]) == 3
                        and sum(p["end_offset"] for p in st["partitions"]) == sent)
            wait_for(caught_up, timeout=60, interval=0.2, message="standalone mirror")
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
            assert "broker_mirror_lag_records" in text
        finally:
            proc.terminate()
            assert proc.wait(15) == 0, log.read_text()[-3000:]
        assert read_all(dr, 3) == read_all(src, 3)
        assert sum(len(v) for v in read_all(dr, 3).values()) == sent
    finally:
        source.stop()
        target.stop()
