"""device-sim run against a real Mosquitto, with a subscriber counting what arrives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_simulator import payloads
from device_simulator.manifest import Manifest
from tests.helpers import Server, find_binary, free_port, wait_for


class Subscriber:
    """A paho subscriber on devices/# (QoS 1) that keeps every message it receives."""

    def __init__(self, port: int, tls_ca: Path | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"counter-{port}")
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.on_connect = lambda c, *_: c.subscribe("devices/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber did not subscribe"

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def settle(self, at_least: int, timeout: float = 20.0) -> None:
        wait_for(lambda: self.count() >= at_least, timeout, message=f"{at_least} messages")
        # And nothing more in flight: the count stops moving.
        last = -1
        while last != self.count():
            last = self.count()
            threading.Event().wait(0.3)

    def seqs(self) -> tuple[Counter[tuple[str, int]], int, dict[str, str]]:
        """(count per (device, seq), undecodable payloads, kind per (device, seq) topic)."""
        seen: Counter[tuple[str, int]] = Counter()
        kinds: dict[str, str] = {}
        bad = 0
        with self._lock:
            messages = list(self.messages)
        for topic, payload in messages:
            message = payloads.decode(payload)
            if message is None:
                bad += 1
                continue
            key = (message["device"], message["seq"])
            seen[key] += 1
            kinds[f"{key[0]}/{key[1]}"] = topic.rsplit("/", 1)[1]
            assert topic.split("/")[1] == message["device"]
        return seen, bad, kinds

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def sim(*args: str, timeout: float = 90.0) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "device_simulator.cli", "run", *args,
                           "--json", "--quiet"], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def expected_pairs(manifest: Manifest) -> set[tuple[str, int]]:
    return {(name, seq) for name, rec in manifest.devices.items()
            for seq in rec.expected_seqs("all")}


@pytest.fixture
def subscriber(mosquitto: Server):
    sub = Subscriber(mosquitto.port)
    yield sub
    sub.close()


def test_every_reading_of_a_qos1_run_arrives_and_matches_the_manifest(mosquitto, subscriber,
                                                                      tmp_path):
    path = tmp_path / "run.json"
    rc, summary = sim("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "50",
                      "--rate", "10", "--duration", "3", "--qos", "1",
                      "--manifest", str(path), "--workers", "2")
    assert rc == 0, summary
    manifest = Manifest.read(path)
    assert summary["readings"] == 1500 == manifest.totals["sent"]
    assert summary["acked"] == 1500 and summary["connected_at_start"] == 50
    assert len(manifest.devices) == 50
    for name, rec in manifest.devices.items():
        assert (rec.first_seq, rec.last_seq, rec.sent) == (1, 30, 30), name
    subscriber.settle(1500)
    seen, bad, _ = subscriber.seqs()
    assert bad == 0
    assert set(seen) == expected_pairs(manifest)
    assert sum(seen.values()) == 1500  # no loss, no duplicate from a clean QoS 1 run


def test_faults_reach_the_broker_as_the_manifest_says(mosquitto, subscriber, tmp_path):
    path = tmp_path / "faults.json"
    rc, summary = sim("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "40",
                      "--rate", "20", "--duration", "4", "--qos", "1", "--seed", "7",
                      "--faults", "disconnect=0.004,duplicate=0.03,malformed=0.02,"
                                  "oversized=0.01,oversized_bytes=20000,skew=300,"
                                  "reconnect=0.1-0.3",
                      "--alarm-ratio", "0.05", "--format", "cbor", "--manifest", str(path))
    assert rc == 0, summary
    manifest = Manifest.read(path)
    t = manifest.totals
    assert t["sent"] == 3200
    assert t["disconnects"] > 0 and summary["reconnects"] > 0
    assert t["duplicates"] > 0 and t["malformed"] > 0 and t["oversized"] > 0 and t["alarm"] > 0
    assert t["dropped"] == 0 and t["unconfirmed"] == 0
    subscriber.settle(t["sent"] - t["malformed"])
    seen, bad, kinds = subscriber.seqs()
    # Every reading that was not corrupt arrived (QoS 1 resends across reconnects).
    assert expected_pairs(manifest) <= set(seen)
    # Malformed payloads arrive undecodable; oversized ones arrive whole.
    assert bad == t["malformed"]
    oversized = {(n, s) for n, r in manifest.devices.items() for s in r.oversized_seqs}
    assert oversized <= set(seen)
    # Duplicates were sent on purpose (and MQTT may add its own after a cut connection).
    assert sum(seen.values()) - len(seen) >= t["duplicates"]
    # Alarms went to the alarm topic, the rest to telemetry.
    for name, rec in manifest.devices.items():
        for seq in set(rec.alarm_seqs) - set(rec.malformed_seqs):
            assert kinds[f"{name}/{seq}"] == "alarm"
    assert {abs(r.clock_skew_ms) <= 300 for r in manifest.devices.values()} == {True}


def test_gateway_mode_over_mqtt5_carries_many_devices_per_connection(mosquitto, subscriber,
                                                                    tmp_path):
    path = tmp_path / "gw.json"
    rc, summary = sim("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "60",
                      "--gateway", "25", "--rate", "5", "--duration", "2",
                      "--mqtt-version", "5", "--id-pattern", "sensor-{n}", "--id-start", "100",
                      "--manifest", str(path))
    assert rc == 0, summary
    assert summary["connections"] == 3 and summary["connected_at_start"] == 3
    manifest = Manifest.read(path)
    assert sorted(manifest.devices)[:2] == ["sensor-100", "sensor-101"]
    subscriber.settle(600)
    seen, bad, _ = subscriber.seqs()
    assert bad == 0 and set(seen) == expected_pairs(manifest) and len(seen) == 600


def test_qos0_runs_and_a_broker_that_is_down_fails_the_run(mosquitto, subscriber, tmp_path):
    rc, summary = sim("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "10",
                      "--rate", "10", "--duration", "1", "--qos", "0")
    assert rc == 0 and summary["readings"] == 100 and summary["acked"] == 0
    subscriber.settle(100)
    rc, summary = sim("--broker", f"mqtt://127.0.0.1:{free_port()}", "--devices", "2",
                      "--rate", "1", "--duration", "1", "--drain-timeout", "0.5")
    assert rc == 1
    assert summary["connected_at_start"] == 0 and summary["connect_errors"]


def _broker(tmp: Path, config: str) -> Server:
    port = free_port()
    (tmp / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\npersistence false\nlog_type error\n{config}"
        # As root, Mosquitto drops to user "mosquitto", who cannot read pytest's tmp dir.
        + ("user root\n" if os.geteuid() == 0 else ""))
    return Server([find_binary("mosquitto"), "-c", str(tmp / "mosquitto.conf")], port,
                  tmp / "mosquitto.out")


def test_mqtt5_with_a_small_receive_maximum_delivers_everything(tmp_path):
    # Mosquitto announces max_inflight_messages as the MQTT 5 receive maximum; the
    # adapter caps its window to it (test_sim_mqtt_pub.py checks the cap itself).
    server = _broker(tmp_path, "allow_anonymous true\nmax_inflight_messages 3\n").start()
    try:
        sub = Subscriber(server.port)
        try:
            rc, summary = sim("--broker", f"mqtt://127.0.0.1:{server.port}", "--devices", "50",
                              "--gateway", "50", "--rate", "20", "--duration", "2",
                              "--mqtt-version", "5", "--max-inflight", "100")
            assert rc == 0, summary
            assert summary["reconnects"] == 0 and summary["acked"] == 2000
            sub.settle(2000)
            assert len(sub.seqs()[0]) == 2000
        finally:
            sub.close()
    finally:
        server.kill()


def test_ctrl_c_stops_the_run_early_with_a_truthful_manifest(mosquitto, subscriber, tmp_path):
    path = tmp_path / "stopped.json"
    proc = subprocess.Popen([sys.executable, "-m", "device_simulator.cli", "run", "--broker",
                             f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "20", "--rate",
                             "20", "--duration", "60", "--manifest", str(path), "--json",
                             "--quiet"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: subscriber.count() >= 200, 30, message="the run to publish")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    summary = json.loads(out)
    assert summary["interrupted"] and summary["publish_seconds"] < 30
    manifest = Manifest.read(path)
    assert manifest.run["interrupted"] is True
    subscriber.settle(manifest.totals["sent"])
    seen, _, _ = subscriber.seqs()
    assert set(seen) == expected_pairs(manifest)


def _tls_broker(tmp: Path) -> tuple[Server, Path]:
    openssl = find_binary("openssl")
    run = lambda *a: subprocess.run([openssl, *a], cwd=tmp, check=True,  # noqa: E731
                                    capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
        "server.key", "-out", "server.csr")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    subprocess.run([find_binary("mosquitto_passwd"), "-b", "-c", str(tmp / "passwd"), "sim",
                    "s3cret"], check=True, capture_output=True)
    server = _broker(tmp, f"allow_anonymous false\npassword_file {tmp / 'passwd'}\n"
                          f"cafile {tmp / 'ca.crt'}\ncertfile {tmp / 'server.crt'}\n"
                          f"keyfile {tmp / 'server.key'}\n")
    return server, tmp / "ca.crt"


def test_tls_with_username_and_password(tmp_path):
    server, ca = _tls_broker(tmp_path)
    server.start()
    try:
        sub = Subscriber(server.port, tls_ca=ca, auth=("sim", "s3cret"))
        try:
            rc, summary = sim("--broker", f"mqtts://sim@127.0.0.1:{server.port}", "--ca",
                              str(ca), "--password", "s3cret", "--devices", "5", "--rate", "10",
                              "--duration", "1")
            assert rc == 0, summary
            sub.settle(50)
            assert len(sub.seqs()[0]) == 50
        finally:
            sub.close()
        rc, summary = sim("--broker", f"mqtts://sim:wrong@127.0.0.1:{server.port}", "--ca",
                          str(ca), "--devices", "1", "--rate", "1", "--duration", "1",
                          "--drain-timeout", "0.5")
        assert rc == 1
        assert "connection refused: not authorized" in " ".join(summary["connect_errors"])
    finally:
        server.kill()
