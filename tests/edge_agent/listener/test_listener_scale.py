"""Many devices at once: ``device-sim`` opens one MQTT connection per device to the agent's
listener (1,000 here; 10,000 marked slow), publishes QoS 1 readings, gets every PUBACK,
and every reading is in the log once. And the open-files limit: an agent whose
``ulimit -n`` cannot hold max_connections says so and serves fewer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from listener_testing import agent, listener_status, seqs_by_device, stored, write_config

from tests.helpers import find_binary, wait_for


def _fleet(tmp: Path, devices: int) -> None:
    cfg, status_port, port = write_config(
        tmp, listener=f"allow_anonymous = true\nmax_connections = {devices + 100}")
    server = agent(cfg, status_port, port, tmp / "agent.log").start()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "device_simulator.cli", "run", "--broker",
             f"mqtt://127.0.0.1:{port}", "--devices", str(devices), "--rate", "0.2",
             "--duration", "3", "--qos", "1", "--json", "--quiet", "--id-pattern",
             "fleet-{n:05d}", "--connect-concurrency", "256"],
            capture_output=True, text=True, timeout=300)
        summary = json.loads(res.stdout)
        assert res.returncode == 0 and summary["ok"], res.stdout[-2000:] + res.stderr[-2000:]
        assert summary["connected_at_start"] == devices and summary["connection_errors"] == 0
        assert summary["sent"] > 0 and summary["acked"] == summary["sent"]
        doc = listener_status(status_port)
        assert doc["connects"] >= devices and doc["pubacks"] >= summary["sent"]
        wait_for(lambda: listener_status(status_port)["connections"] == 0, 30,
                 message="the fleet's connections to close")
    finally:
        server.stop()
    seqs = seqs_by_device(stored(tmp / "data"))
    assert sum(len(s) for s in seqs.values()) == summary["sent"]
    for device, got in seqs.items():
        assert got == sorted(set(got)), f"{device}: {got}"


def test_a_thousand_devices(tmp_path: Path) -> None:
    _fleet(tmp_path, 1000)


@pytest.mark.slow
def test_ten_thousand_devices(tmp_path: Path) -> None:
    _fleet(tmp_path, 10_000)


def test_a_low_open_files_limit_lowers_max_connections(tmp_path: Path) -> None:
    cfg, status_port, port = write_config(tmp_path)
    server = agent(cfg, status_port, port, tmp_path / "agent.log")
    server.args = [find_binary("prlimit"), "--nofile=400:400", *server.args]
    server.start()
    try:
        assert listener_status(status_port)["max_connections"] == 400 - 256
        wait_for(lambda: "ulimit -n" in (tmp_path / "agent.log").read_text(), 10,
                 message="a warning naming ulimit -n")
    finally:
        server.stop()
