"""The whole pipeline under faults: 200 simulated devices publish QoS 1 readings to a real
Mosquitto while the edge agent is killed with SIGKILL twice, the cloud broker once, and
the uplink is cut once; afterwards the verifier finds nothing missing, duplicated or
reordered on either cloud topic (G1, G3, G4, G5 end to end)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_simulator.netfault import FaultProxy
from tests.helpers import Server, free_port, load_demo_module, wait_for

BIN = Path(sys.executable).parent




def _status(port: int) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None


def _subscribed(port: int) -> bool:
    doc = _status(port)
    return bool(doc) and all(m["subscribed"] for m in doc["mqtt"])


def _drained(port: int) -> bool:
    doc = _status(port)
    return bool(doc) and all(s["backlog_records"] == 0 for s in doc["streams"])


@pytest.mark.slow
def test_pipeline_survives_agent_and_broker_kills_and_an_uplink_cut(
        tmp_path: Path, mosquitto: Server) -> None:
    demo = load_demo_module()
    cloud_port, uplink_port, status_port = free_port(), free_port(), free_port()
    cloud_toml, edge_toml = demo.write_configs(tmp_path, mosquitto.port, "5", cloud_port,
                                               uplink_port, status_port)
    cloud = Server([str(BIN / "cloud-broker"), "serve", "--config", str(cloud_toml)],
                   cloud_port, tmp_path / "cloud.out")
    agent = Server([str(BIN / "edge-agent"), "run", "--config", str(edge_toml)], status_port,
                   tmp_path / "agent.out", ready=lambda: _subscribed(status_port),
                   ready_timeout=60)
    proxy = FaultProxy(uplink_port, "127.0.0.1", cloud_port).start()
    manifest = tmp_path / "run.json"
    sim = None
    try:
        cloud.start()
        agent.start()
        sim = subprocess.Popen(
            [str(BIN / "device-sim"), "run", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
             "--devices", "200", "--rate", "4", "--duration", "16", "--qos", "1",
             "--alarm-ratio", "0.02", "--manifest", str(manifest), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()

        def at(t: float) -> None:  # a fault schedule, not a wait for a result
            time.sleep(max(0.0, started + t - time.monotonic()))

        at(3)
        agent.kill()
        agent.start()
        at(6)
        cloud.kill()
        cloud.start()
        at(9)
        proxy.down()
        at(11)
        proxy.up()
        at(12)
        agent.kill()
        agent.start()
        _out, err = sim.communicate(timeout=120)
        assert sim.returncode == 0, err[-3000:]
        wait_for(lambda: _drained(status_port), timeout=120, interval=0.2,
                 message="the edge backlog to drain")
        assert proxy.stats.refused > 0, "the uplink cut should have refused connections"
        for topic, kind in (("telemetry", "telemetry"), ("alarms", "alarm")):
            res = subprocess.run(
                [str(BIN / "device-sim"), "verify", "--from", f"http://127.0.0.1:{cloud_port}",
                 "--topic", topic, "--kind", kind, "--manifest", str(manifest),
                 "--token", demo.READ_TOKEN, "--settle", "20", "--json"],
                capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
            report = json.loads(res.stdout)
            totals = report["totals"]
            assert totals["expected"] > 0 and totals["delivered"] == totals["expected"]
            assert totals["missing"] == totals["duplicates"] == totals["out_of_order"] == 0
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        agent.kill()
        cloud.stop()
        proxy.stop()
