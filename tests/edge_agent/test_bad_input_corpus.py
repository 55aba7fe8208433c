"""A corpus of bad input (malformed JSON/CBOR, oversized, unknown topics, hostile device
names) mixed into a stream of good readings: every bad message is counted by reason,
written to the dead-letter log and PUBACKed; the agent keeps storing the good readings
and never crashes (G7)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from edge_agent_testing import (
    Publisher,
    agent_server,
    get_status,
    http_get,
    read_stream,
    seqs_by_device,
    write_config,
)

from shared_log import Log
from tests.helpers import Server, wait_for

STREAMS = """
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"

[[streams]]
name = "fleet"
topics = ["fleet/#"]
device_key = "field:device"
require_sequence = true

[[streams]]
name = "cbor"
topics = ["cbor/+/data"]
device_key = "topic:cbor/{device}/data"
payload = "cbor"
require_sequence = true
"""

# (topic, payload, qos, stream the dead-letter entry belongs to, reason)
CORPUS: list[tuple[str, bytes, int, str, str]] = [
    ("devices/.hidden/telemetry", b"{}", 1, "telemetry", "bad_device"),
    ("devices/-rf/telemetry", b"{}", 1, "telemetry", "bad_device"),
    ("devices/" + "a" * 200 + "/telemetry", b"{}", 1, "telemetry", "bad_device"),
    ("devices/d\u00e9v/telemetry", b"{}", 0, "telemetry", "bad_device"),
    ("devices/%2E%2E%2Fetc/telemetry", b"{}", 1, "telemetry", "bad_device"),
    ("devices/big/telemetry", b"x" * 5000, 1, "telemetry", "oversized"),
    ("fleet/a", b"{not json", 1, "fleet", "malformed"),
    ("fleet/a", b"[1, 2, 3]", 1, "fleet", "malformed"),
    ("fleet/a", b'{"device": "../../etc", "seq": 1}', 1, "fleet", "bad_device"),
    ("fleet/a", b'{"seq": 1}', 1, "fleet", "no_device"),
    ("fleet/a", b'{"device": "truck1"}', 1, "fleet", "missing_sequence"),
    ("cbor/c1/data", b"\xff\xfe\xfd", 1, "cbor", "malformed"),
    ("cbor/c1/data", cbor2.dumps([1, 2]), 1, "cbor", "malformed"),
    ("unknown/thing", b"hello", 1, "", "no_stream"),
    ("devices/d1/status", b"online", 1, "", "no_stream"),
]


@pytest.mark.slow
def test_bad_input_is_counted_dead_lettered_and_never_stops_ingest(
        tmp_path: Path, mosquitto: Server) -> None:
    cfg, status_port = write_config(
        tmp_path, mosquitto.port, streams=STREAMS,
        extra='[ingest]\nmax_payload_bytes = 4096\ndead_letter_payload_bytes = 512\n'
              'unmatched_topics = ["unknown/#", "devices/+/+"]\n')
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pid = agent.proc.pid  # type: ignore[union-attr]
    good = [Publisher(mosquitto.port, f"good{i}") for i in range(2)]
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bad-publisher")
    bad.connect("127.0.0.1", mosquitto.port)
    bad.loop_start()
    rounds = 3
    try:
        seq = 0
        for _ in range(rounds):
            for topic, payload, qos, _s, _r in CORPUS:
                for p in good:
                    p.publish(seq)
                seq += 1
                bad.publish(topic, payload, qos=qos).wait_for_publish(10)
        # good readings on the CBOR and field-keyed streams too
        bad.publish("cbor/c1/data", cbor2.dumps({"seq": 5, "ts": 1.7e12}),
                    qos=1).wait_for_publish(10)
        bad.publish("fleet/x", json.dumps({"device": "truck1", "seq": 9}),
                    qos=1).wait_for_publish(10)
        expected: dict[tuple[str, str], int] = {}
        for _t, _p, _q, stream, reason in CORPUS:
            expected[(stream, reason)] = expected.get((stream, reason), 0) + rounds

        def dead_counts() -> dict[tuple[str, str], int]:
            doc = get_status(status_port) or {}
            by = doc.get("dead_letter", {}).get("by_stream", {})
            return {(s, r): n for s, rs in by.items() for r, n in rs.items()}

        wait_for(lambda: dead_counts() == expected, 30, interval=0.1,
                 message="every bad message counted by reason")
        wait_for(lambda: all(len(v) == seq for v in
                             seqs_by_device(read_stream(tmp_path / "data")).values()), 30)
        doc = get_status(status_port)
        assert doc is not None
        by_name = {s["name"]: s for s in doc["streams"]}
        # QoS 1 bad messages were acknowledged after the dead-letter write: nothing waits
        wait_for(lambda: all(s["pubacks"] == s["received"] - _qos0(s["name"]) * rounds
                             for s in (get_status(status_port) or {"streams": []})["streams"]),
                 10, message="PUBACKs for every QoS 1 message")
        assert by_name["fleet"]["appended"] == 1 and by_name["cbor"]["appended"] == 1
        metrics = http_get(status_port, "/metrics").text
        assert 'edge_ingest_dead_lettered_total{reason="oversized",stream="telemetry"} 3.0' \
            in metrics
        assert agent.running and agent.proc.pid == pid  # type: ignore[union-attr]
    finally:
        bad.loop_stop()
        bad.disconnect()
        for p in good:
            p.close()
        agent.stop()
    seqs = seqs_by_device(read_stream(tmp_path / "data"))
    assert seqs == {"good0": list(range(seq)), "good1": list(range(seq))}
    assert seqs_by_device(read_stream(tmp_path / "data", "cbor")) == {"c1": [5]}
    assert seqs_by_device(read_stream(tmp_path / "data", "fleet")) == {"truck1": [9]}
    with Log(tmp_path / "data" / "dead-letter", read_only=True) as lg:
        entries = lg.read(lg.start_offset, max_records=1000)
    reasons = sorted(dict(e.headers)["reason"].decode() for e in entries)
    assert len(entries) == sum(expected.values())
    assert reasons.count("oversized") == rounds
    big = next(e for e in entries if dict(e.headers)["reason"] == b"oversized")
    assert len(big.value) == 512 and dict(big.headers)["size"] == b"5000"
    log_text = (tmp_path / "agent.out").read_text()
    assert "Traceback" not in log_text
    assert not any(name.startswith("..") for name in os.listdir(tmp_path / "data" / "streams"))


def _qos0(stream: str) -> int:
    return sum(1 for _t, _p, q, s, _r in CORPUS if q == 0 and s == stream)
