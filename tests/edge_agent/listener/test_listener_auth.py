"""Who may connect and publish: passwords from a ``mosquitto_passwd`` file, TLS client
certificates (their CN is the device id), the ACL (a device publishes under its own id
only), and the clear refusals MQTT 3.1.1 and 5 clients get."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from listener_testing import (
    agent,
    certificates,
    listener_status,
    passwd_file,
    readings_of,
    write_config,
)

from tests.helpers import find_binary, wait_for


def _pub(port: int, *args: str, version: str = "mqttv5",
         seq: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_binary("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port),
                           "-V", version, "-q", "1", "-d", "-m", json.dumps({"seq": seq}),
                           *args], capture_output=True, text=True, timeout=20)


@pytest.fixture
def password_agent(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    pw = passwd_file(tmp_path, {"alice": "s3cret", "carol": "other"})
    cfg, status_port, port = write_config(tmp_path, listener=f'password_file = "{pw}"')
    server = agent(cfg, status_port, port, tmp_path / "agent.log").start()
    try:
        yield pw, status_port, port
    finally:
        server.stop()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_a_device_logs_in_and_publishes_under_its_own_name(
        password_agent: tuple[Path, int, int], version: str) -> None:
    _, status_port, port = password_agent
    ok = _pub(port, "-u", "alice", "-P", "s3cret", "-i", "any-client-id", "-t",
              "devices/alice/telemetry", version=version)
    assert ok.returncode == 0 and "received PUBACK" in ok.stdout, ok.stdout + ok.stderr
    wait_for(lambda: readings_of(status_port, "alice") == [1], 10, message="alice's reading")


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_bad_logins_are_refused_with_the_reason(password_agent: tuple[Path, int, int],
                                                version: str) -> None:
    _, status_port, port = password_agent
    for creds in (["-u", "alice", "-P", "wrong"], ["-u", "mallory", "-P", "s3cret"], []):
        res = _pub(port, *creds, "-t", "devices/alice/telemetry", version=version)
        assert res.returncode != 0
        text = (res.stdout + res.stderr).lower()
        assert "bad user name or password" in text or "not authorised" in text, text
    refused = listener_status(status_port)["refused"]
    assert refused.get("bad_user_name_or_password", 0) >= 3
    assert readings_of(status_port, "alice") == []


def test_the_acl_refuses_another_devices_topic(password_agent: tuple[Path, int, int]) -> None:
    _, status_port, port = password_agent
    # MQTT 5: a PUBACK with reason 0x87; the reading is not stored
    v5 = _pub(port, "-u", "alice", "-P", "s3cret", "-t", "devices/carol/telemetry")
    assert "RC:135" in v5.stdout or "not authorized" in (v5.stdout + v5.stderr).lower(), v5.stdout
    # MQTT 3.1.1 has no refusing PUBACK: the connection is closed, nothing acknowledged
    v3 = _pub(port, "-u", "alice", "-P", "s3cret", "-t", "devices/carol/telemetry",
              version="mqttv311")
    assert "received PUBACK" not in v3.stdout and v3.returncode != 0, v3.stdout
    assert listener_status(status_port)["acl_denied"] == 2
    assert readings_of(status_port, "carol") == []


def test_a_user_added_to_the_file_can_connect_without_a_restart(
        password_agent: tuple[Path, int, int]) -> None:
    pw, status_port, port = password_agent
    assert _pub(port, "-u", "bob", "-P", "pw-b", "-t", "devices/bob/telemetry").returncode
    subprocess.run([find_binary("mosquitto_passwd"), "-b", str(pw), "bob", "pw-b"],
                   check=True, capture_output=True)
    wait_for(lambda: _pub(port, "-u", "bob", "-P", "pw-b", "-t",
                          "devices/bob/telemetry").returncode == 0, 10, interval=0.3,
             message="the reloaded password file to admit bob")
    wait_for(lambda: readings_of(status_port, "bob") == [1], 10, message="bob's reading")


def test_tls_client_certificates_name_the_device(tmp_path: Path) -> None:
    certs = certificates(tmp_path, ["sensor-7"])
    cfg, status_port, port = write_config(tmp_path, listener=f"""
connect_timeout_s = 2
tls_cert = "{certs['server']}"
tls_key = "{certs['server_key']}"
tls_client_ca = "{certs['ca']}"
""")
    server = agent(cfg, status_port, port, tmp_path / "agent.log").start()
    tls = ["--cafile", str(certs["ca"])]
    try:
        ok = _pub(port, *tls, "--cert", str(certs["sensor-7"]), "--key",
                  str(certs["sensor-7_key"]), "-t", "devices/sensor-7/telemetry")
        assert ok.returncode == 0 and "received PUBACK" in ok.stdout, ok.stdout + ok.stderr
        wait_for(lambda: readings_of(status_port, "sensor-7") == [1], 10,
                 message="the certificate's device reading")
        other = _pub(port, *tls, "--cert", str(certs["sensor-7"]), "--key",
                     str(certs["sensor-7_key"]), "-t", "devices/sensor-8/telemetry")
        assert "RC:135" in other.stdout, other.stdout  # its CN is not sensor-8
        for bad in ([], ["--cert", str(certs["rogue"]), "--key", str(certs["rogue_key"])]):
            res = _pub(port, *tls, *bad, "-t", "devices/rogue/telemetry")
            assert res.returncode != 0 and "received CONNACK" not in res.stdout, res.stdout
        assert readings_of(status_port, "rogue") == []
        # failed handshakes hold no connection slot (freed after connect_timeout_s)
        wait_for(lambda: listener_status(status_port)["connections"] == 0, 10,
                 message="the refused sockets' slots to be freed")
    finally:
        server.stop()
