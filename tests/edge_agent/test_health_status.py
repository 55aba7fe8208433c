"""Health, metrics and ``edge-agent status``: the health rules as pure functions, stuck
detection on a real agent (cloud down with a backlog -> 503, cloud up -> 200), the
/metrics counters, the status command live, as JSON and from files, and JSON logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edge_agent_testing import (
    Publisher,
    agent_server,
    http_get,
    stream_status,
    write_config,
)

from edge_agent.status import StreamTracker, drain_eta, health, masked_url, uplink_state
from tests.helpers import Server, broker_server, free_port, wait_for


def stream(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "t", "backlog_records": 0, "acked_moved_at": 100.0,
                               "write_error": "", "uplink": {"stopped": None}}
    base.update(kw)
    return base


def test_health_rules() -> None:
    assert health({"streams": [stream()]}, 1000, 60) == []
    # a backlog whose watermark has not moved for stuck_after_s
    assert health({"streams": [stream(backlog_records=5, acked_moved_at=900.0)]}, 959, 60) == []
    [p] = health({"streams": [stream(backlog_records=5, acked_moved_at=900.0)]}, 960, 60)
    assert "stuck" in p and "5 records" in p
    [p] = health({"streams": [stream(write_error="LogFull: full")]}, 0, 60)
    assert "cannot be written" in p
    [p] = health({"streams": [stream(uplink={"stopped": "HTTP 403: no"})]}, 0, 60)
    assert "uplink stopped" in p
    m = {"client_id": "c", "connected": False, "disconnected_since": 10.0, "last_error": "x"}
    assert health({"mqtt": [m]}, 69, 60) == []
    assert "disconnected" in health({"mqtt": [m]}, 70, 60)[0]


def test_health_rules_for_tls_mqtt_refusals_and_tasks() -> None:
    [p] = health({"streams": [stream(uplink={"stopped": None,
                                             "tls_error": "TLS certificate verification "
                                                          "failed: x"})]}, 0, 60)
    assert "TLS certificate verification failed" in p
    refused = {"client_id": "c", "connected": False, "disconnected_since": 10.0,
               "refused": "connection refused by the broker: Not authorized"}
    [p] = health({"mqtt": [refused]}, 10.0, 300)  # at once, not after stuck_after_s
    assert "Not authorized" in p
    down = {"client_id": "c", "connected": False, "disconnected_since": 10.0,
            "last_error": "connect failed: ConnectionRefusedError"}
    assert health({"mqtt": [down]}, 19.0, 300, mqtt_down_after_s=10) == []
    assert "disconnected for 10s" in health({"mqtt": [down]}, 20.0, 300,
                                            mqtt_down_after_s=10)[0]
    task = {"name": "forwarder", "running": True, "failures": 1, "last_failure_at": 5.0,
            "down_since": None, "last_error": "ValueError: x"}
    assert "task forwarder" in health({"tasks": [task]}, 10.0, 300, task_window_s=60)[0]
    assert health({"tasks": [task]}, 65.0, 300, task_window_s=60) == []


def test_status_masks_passwords_in_urls() -> None:
    assert masked_url("https://gw:s3cret@cloud.example:8443/x") == \
        "https://***@cloud.example:8443/x"
    assert masked_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


def test_tracker_rates_and_stuck_clock() -> None:
    t = StreamTracker(acked_offset=-1, end_offset=0, appended=0, progress_at=0.0)
    t.observe(10.0, acked=-1, end=0, appended=0, backlog=0)
    t.observe(11.0, acked=-1, end=100, appended=100, backlog=100)
    assert t.progress_at == 11.0  # the backlog appeared: the stuck clock starts now
    t.observe(12.0, acked=-1, end=200, appended=200, backlog=200)
    assert t.progress_at == 11.0 and t.ingest_rate > 0
    t.observe(13.0, acked=149, end=200, appended=200, backlog=50)
    assert t.progress_at == 13.0 and t.acked_records == 150 and t.drain_rate > 0
    assert drain_eta(50, t.drain_rate) == pytest.approx(50 / t.drain_rate)
    assert drain_eta(0, 0.0) == 0.0 and drain_eta(5, 0.0) is None
    assert uplink_state(True, [{"batches_sent": 0}]) == "idle"
    assert uplink_state(False, [{}]) == "retrying"
    assert uplink_state(True, [{"stopped": "x"}]) == "stopped"


def status_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "status", "--config",
                           str(cfg), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_stuck_detection_metrics_and_status_command(tmp_path: Path, mosquitto: Server) -> None:
    cloud_port = free_port()
    cfg, status_port = write_config(tmp_path, mosquitto.port, cloud_port=cloud_port)
    cfg.write_text(cfg.read_text().replace(
        "[status]\n", "[status]\nstuck_after_s = 1.5\njson_logs = true\n"))
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pub = Publisher(mosquitto.port, "s1")
    broker = None
    try:
        assert http_get(status_port, "/healthz").status_code == 200
        for seq in range(50):
            pub.publish(seq)
        wait_for(lambda: stream_status(status_port)["pubacks"] >= 50, 20)
        # the cloud is down and the backlog does not move: unhealthy after stuck_after_s
        wait_for(lambda: http_get(status_port, "/healthz").status_code == 503, 20)
        body = http_get(status_port, "/healthz").json()
        assert body["status"] == "unhealthy"
        assert any("stuck" in p and "telemetry" in p for p in body["problems"])
        st = stream_status(status_port)
        assert st["backlog_records"] == 50 and st["oldest_unsent_age_s"] > 0
        assert st["drain_eta_s"] is None
        metrics = http_get(status_port, "/metrics").text
        for name in ("edge_ingest_received_total", "edge_ingest_appended_total",
                     "edge_ingest_pubacks_total", "edge_ingest_deduplicated_total",
                     "edge_ingest_dead_lettered_total", "edge_ingest_dropped_total",
                     "edge_uplink_acked_records_total", "edge_backlog_records",
                     "edge_backlog_bytes", "edge_oldest_unsent_age_seconds",
                     "edge_ingest_rate", "edge_fsync_latency_seconds_bucket",
                     "edge_uplink_retries_total", "edge_uplink_last_error_info",
                     "edge_healthy"):
            assert name in metrics, name
        assert 'edge_ingest_appended_total{stream="telemetry"} 50.0' in metrics
        assert 'edge_backlog_records{stream="telemetry"} 50.0' in metrics
        assert "edge_healthy 0.0" in metrics
        # the status command, live
        res = status_cli(cfg, "--json")
        assert res.returncode == 1  # unhealthy
        doc = json.loads(res.stdout)
        assert doc["source"] == "agent" and doc["uplink"]["state"] == "retrying"
        assert doc["uplink"]["last_error"]
        res = status_cli(cfg)
        assert "telemetry" in res.stdout and "unhealthy" in res.stdout
        # the cloud comes up: the watermark moves, healthy again
        broker = broker_server(tmp_path / "broker", port=cloud_port,
                               topics={"telemetry": 1}).start()
        wait_for(lambda: http_get(status_port, "/healthz").status_code == 200, 30)
        assert stream_status(status_port)["backlog_records"] == 0
        res = status_cli(cfg, "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["uplink"]["state"] == "connected"
    finally:
        pub.close()
        agent.stop()
        if broker is not None:
            broker.stop()
    # the agent is down: the status command falls back to its files
    res = status_cli(cfg, "--json")
    doc = json.loads(res.stdout)
    assert doc["source"] == "files" and res.returncode == 1
    [t] = doc["streams"]
    assert t["acked_offset"] == 49 and t["backlog_records"] == 0 and t["appended"] == 50
    assert "agent not reachable" in doc["problems"][0]
    res = status_cli(cfg)
    assert "from files" in res.stdout and "telemetry" in res.stdout
    # structured logs: one JSON object per line
    lines = [ln for ln in (tmp_path / "agent.out").read_text().splitlines() if ln.strip()]
    parsed = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert parsed and all({"ts", "level", "logger", "msg"} <= set(p) for p in parsed)
    assert any("running" in p["msg"] for p in parsed)
