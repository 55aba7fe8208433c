"""kill -9 of the agent at random moments while ``mosquitto_pub -q 1`` devices publish to
its MQTT listener: every reading a device received a PUBACK for is in the agent's log
exactly once, in order (G1 with the listener: the PUBACK means the reading is on disk).

Each device is a loop of ``mosquitto_pub`` processes, one per reading, as a device with
no memory would do: a reading is retried (same sequence number) until a PUBACK comes back,
and a reading that got one is never sent again. So a PUBACK sent before the group commit
that a kill then lost shows up as a missing sequence number; a retried reading that had
been stored shows up as a duplicate unless the sequence dedup drops it.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from listener_testing import agent, seqs_by_device, stored, write_config

from tests.helpers import find_binary


class Device(threading.Thread):
    def __init__(self, port: int, name: str, version: str, persistent: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.name, self.version = port, name, version
        self.persistent = persistent
        self.acked: list[int] = []
        self.attempts = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        tool = find_binary("mosquitto_pub")
        seq = 0
        session = ["-c"] + (["-x", "600"] if self.version == "mqttv5" else [])
        while True:
            self.attempts += 1
            try:
                res = subprocess.run(
                    [tool, "-h", "127.0.0.1", "-p", str(self.port), "-V", self.version,
                     "-q", "1", "-i", self.name, "-t", f"devices/{self.name}/telemetry",
                     "-m", json.dumps({"seq": seq}), "-d",
                     *(session if self.persistent else [])],
                    capture_output=True, text=True, timeout=10)
                acked = "received PUBACK (Mid: 1, RC:0)" in res.stdout
            except subprocess.TimeoutExpired:
                acked = False
            if acked:
                self.acked.append(seq)
                seq += 1
                if self.stopping.is_set():
                    return  # stops only right after a PUBACK: nothing left in flight
            else:
                time.sleep(0.02)


def _run(tmp: Path, kills: int) -> None:
    cfg, status_port, port = write_config(tmp, extra="[ingest]\ndedup_checkpoint_s = 0.5")
    server = agent(cfg, status_port, port, tmp / "agent.log").start()
    devices = [Device(port, f"dev-{i}", ("mqttv311", "mqttv5")[i % 2], i < 2)
               for i in range(4)]
    rng = random.Random(kills)
    try:
        for d in devices:
            d.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.0))
            server.kill()
            server.start()
        time.sleep(0.5)
        for d in devices:
            d.stopping.set()
        for d in devices:
            d.join(60)
            assert not d.is_alive(), f"{d.name} did not get its last PUBACK"
    finally:
        for d in devices:
            d.stopping.set()
        server.stop()
    got = seqs_by_device(stored(tmp / "data"))
    for d in devices:
        assert d.acked == list(range(len(d.acked)))
        assert len(d.acked) > kills // 2, f"{d.name}: too few readings to mean anything"
        mine = got.get(d.name, [])
        first = next((i for i, (a, b) in enumerate(zip(d.acked, mine, strict=False))
                      if a != b), None)
        assert mine == d.acked, (f"{d.name}: {len(d.acked)} PUBACKed, {len(mine)} stored, "
                                 f"first difference at {first}")
        print(f"{d.name}: {len(d.acked)} readings PUBACKed in {d.attempts} attempts")


def test_sigkill_loses_no_acknowledged_reading(tmp_path: Path) -> None:
    _run(tmp_path, kills=5)


@pytest.mark.slow
def test_sigkill_20_times_loses_no_acknowledged_reading(tmp_path: Path) -> None:
    _run(tmp_path, kills=20)


def test_a_session_is_still_present_after_a_kill(tmp_path: Path) -> None:
    """The session-present flag survives kill -9: a device told "not present" would
    discard the readings it had not had acknowledged."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    cfg, status_port, port = write_config(tmp_path)
    server = agent(cfg, status_port, port, tmp_path / "agent.log").start()

    def connect() -> bool:
        flags: list[bool] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keeper",
                        protocol=mqtt.MQTTv5)
        c.on_connect = lambda _c, _u, f, _rc, _p: flags.append(bool(f.session_present))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        deadline = time.monotonic() + 10
        while not flags and time.monotonic() < deadline:
            c.loop(0.05)
        c.disconnect()
        assert flags, "no CONNACK"
        return flags[0]

    try:
        assert connect() is False  # a new session
        server.kill()  # no clean stop: only what was written before the CONNACK counts
        server.start()
        assert connect() is True
    finally:
        server.stop()
