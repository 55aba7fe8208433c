"""device-sim verify against a real cloud broker fed through its ingest endpoint.

The records are shaped like the edge agent's (edge_agent/ingest.py): key = device id,
value = the payload as the device sent it, timestamp = the agent's MQTT receive time,
headers content-type / mqtt-topic / seq / device-ts; the broker adds ``origin``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from device_simulator import payloads, sensors
from device_simulator.manifest import DeviceRecord, Manifest
from tests.helpers import Server, broker_server, wait_for
from uplink import Batch, UplinkRecord, encode_batch

DEVICES = 12
SEQS = 25
T0 = 1_700_000_000_000
EDGE_DELAY_MS = 25
MALFORMED = ("dev-00003", 8)  # sent corrupt on purpose; the edge dead-letters it


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Server]:
    server = broker_server(tmp_path / "broker", topics={"clean": 4, "broken": 4}).start()
    try:
        yield server
    finally:
        server.stop()


def _fleet(tmp_path: Path) -> tuple[Path, list[tuple[str, int, bytes]]]:
    """A manifest and the (device, seq, payload) readings it describes, in send order."""
    records: dict[str, DeviceRecord] = {}
    readings = []
    for seq in range(1, SEQS + 1):
        for n in range(1, DEVICES + 1):
            name = f"dev-{n:05d}"
            rec = records.setdefault(name, DeviceRecord(name, n, "env"))
            rec.note_seq(seq)
            rec.sent += 1
            if (name, seq) == MALFORMED:
                rec.malformed_seqs.append(seq)
                continue
            p = sensors.profile_for(1, n)
            message = payloads.telemetry(name, seq, T0 + seq * 100, p.kind,
                                         sensors.reading(p, seq * 0.1, seq))
            readings.append((name, seq, payloads.encode(message, "json")))
    manifest = Manifest(run={"devices": DEVICES}, devices=records)
    manifest.compute_totals()
    path = tmp_path / "run.json"
    manifest.write(path)
    return path, readings


def _edge_record(offset: int, device: str, seq: int, value: bytes) -> UplinkRecord:
    ts = T0 + seq * 100
    headers = (("content-type", b"application/json"),
               ("mqtt-topic", f"devices/{device}/telemetry".encode()),
               ("seq", b"%d" % seq), ("device-ts", b"%d" % ts))
    return UplinkRecord(offset, device.encode(), ts + EDGE_DELAY_MS, value, headers)


def _ingest(port: int, topic: str, readings: list[tuple[str, int, bytes]],
            first_offset: int = 0) -> None:
    records = [_edge_record(i, d, s, v) for i, (d, s, v) in enumerate(readings, first_offset)]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for base in range(0, len(records), 100):
            chunk = tuple(records[base:base + 100])
            batch = Batch("edge-1", "telemetry", "gen1", chunk[0].offset, chunk[-1].offset,
                          chunk)
            body, encoding = encode_batch(batch, "zstd")
            resp = http.post(f"/v1/ingest/{topic}", content=body,
                             headers={"content-type": "application/cbor",
                                      "content-encoding": encoding,
                                      "accept": "application/json"})
            assert resp.status_code == 200, resp.text


def _records_served(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('broker_fetch_records_total{topic="clean"}'))


def verify(port: int, topic: str, manifest: Path, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "device_simulator.cli", "verify", "--from",
         f"http://127.0.0.1:{port}", "--topic", topic, "--manifest", str(manifest), "--json",
         *extra], capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {"stderr": proc.stderr}


def test_a_clean_delivery_verifies_with_exit_0(cloud, tmp_path):
    manifest, readings = _fleet(tmp_path)
    _ingest(cloud.port, "clean", readings)
    rc, report = verify(cloud.port, "clean", manifest)
    assert rc == 0, report
    assert report["ok"] and report["records"] == DEVICES * SEQS - 1
    totals = report["totals"]
    assert totals["expected"] == totals["delivered"] == DEVICES * SEQS - 1
    assert totals["missing"] == totals["duplicates"] == totals["out_of_order"] == 0
    assert totals["split"] == 0
    assert report["sent_on_purpose"]["malformed"] == 1
    # Latency: the agent's receive time (the record timestamp) minus the device ts.
    assert report["latency_ms"]["p50"] == report["latency_ms"]["max"] == EDGE_DELAY_MS
    assert report["latency_source"] == "record timestamp"
    assert len(report["per_device"]) == DEVICES
    # The same with a header as the reference: device-ts is the payload ts, so latency 0.
    rc, report = verify(cloud.port, "clean", manifest, "--latency-header", "device-ts")
    assert rc == 0 and report["latency_ms"]["max"] == 0


def test_deleted_duplicated_and_reordered_records_fail_with_exit_1(cloud, tmp_path):
    manifest, readings = _fleet(tmp_path)
    index = {(d, s): i for i, (d, s, _v) in enumerate(readings)}
    broken = [r for r in readings if not (r[0] == "dev-00001" and 5 <= r[1] <= 7)]
    broken.append(readings[index[("dev-00002", 10)]])  # delivered twice
    a, b = index[("dev-00004", 12)], index[("dev-00004", 13)]
    swapped = list(broken)
    ia = swapped.index(readings[a])
    ib = swapped.index(readings[b])
    swapped[ia], swapped[ib] = swapped[ib], swapped[ia]
    _ingest(cloud.port, "broken", swapped)
    rc, report = verify(cloud.port, "broken", manifest)
    assert rc == 1, report
    assert not report["ok"]
    per = report["per_device"]
    assert per["dev-00001"]["missing_ranges"] == [[5, 7]]
    assert per["dev-00002"]["duplicates"] == 1
    assert per["dev-00004"]["out_of_order"] == 1
    assert report["totals"]["missing"] == 3
    assert report["devices_with_problems"] == 3
    assert all(d["ok"] for name, d in per.items()
               if name not in ("dev-00001", "dev-00002", "dev-00004"))


def test_settle_waits_for_records_still_on_their_way(cloud, tmp_path):
    manifest, readings = _fleet(tmp_path)
    half = len(readings) // 2
    _ingest(cloud.port, "clean", readings[:half])
    rc, report = verify(cloud.port, "clean", manifest)
    assert rc == 1 and report["totals"]["missing"] == len(readings) - half
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_simulator.cli", "verify", "--from",
         f"http://127.0.0.1:{cloud.port}", "--topic", "clean", "--manifest", str(manifest),
         "--settle", "30", "--quiet"], stdout=subprocess.PIPE, text=True)
    # Let the verifier read the incomplete topic first (it shows in the broker's metrics).
    wait_for(lambda: _records_served(cloud.port) >= 2 * half, 30,
             message="the verifier's first read")
    _ingest(cloud.port, "clean", readings[half:], first_offset=half)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "PASS"


def test_an_unknown_topic_exits_1_an_unreadable_manifest_2(cloud, tmp_path):
    manifest, _ = _fleet(tmp_path)
    rc, _ = verify(cloud.port, "nope", manifest)
    assert rc == 1  # as cloud-broker consume: the broker answered, the topic is not there
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    rc, _ = verify(cloud.port, "clean", bad)
    assert rc == 2
