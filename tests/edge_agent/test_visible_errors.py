"""Configuration errors are health problems at once, not silent retry loops: a cloud whose
TLS certificate the agent does not trust, an MQTT broker refusing the agent's login, and
an MQTT port nothing listens on all turn /healthz unhealthy, saying why, long before
``status.stuck_after_s`` (left at its default of 300 s here)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
from edge_agent_testing import (
    Publisher,
    agent_server,
    get_status,
    http_get,
    stream_status,
    write_config,
)

from edge_agent.uplink_http import HttpUplink, TlsUplinkError
from tests.cloud_broker.test_tls import make_certs, one_batch
from tests.helpers import (
    Server,
    broker_server,
    find_binary,
    free_port,
    wait_for,
    write_broker_config,
)


def agent_up(config: Path, status_port: int, log_path: Path) -> Server:
    """The agent as a subprocess, ready once its status answers (it may never subscribe)."""
    return Server([sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
                  status_port, log_path, ready=lambda: get_status(status_port) is not None,
                  ready_timeout=60)


def unhealthy_with(status_port: int, text: str) -> list[str] | None:
    resp = http_get(status_port, "/healthz")
    problems = resp.json()["problems"]
    if resp.status_code == 503 and any(text in p for p in problems):
        return problems
    return None


def tls_broker(tmp: Path) -> tuple[Server, Path]:
    ca, cert, key = make_certs(tmp / "certs")
    port = free_port()
    cfg = write_broker_config(tmp / "broker", port,
                              extra=f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    server = Server([sys.executable, "-m", "cloud_broker.cli", "serve", "--config", str(cfg)],
                    port, tmp / "broker.out", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return server.start(), ca


def test_untrusted_cloud_certificate_is_a_health_problem(tmp_path: Path,
                                                          mosquitto: Server) -> None:
    broker, _ca = tls_broker(tmp_path / "cloud")
    try:
        cfg, status_port = write_config(tmp_path, mosquitto.port, cloud_port=broker.port)
        cfg.write_text(cfg.read_text().replace("http://", "https://"))
        # ready once subscribed: a reading published before would reach no subscriber
        agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
        pub = Publisher(mosquitto.port, "t1")
        try:
            pub.publish(0)
            started = time.monotonic()
            problems = wait_for(lambda: unhealthy_with(status_port, "TLS certificate"), 20,
                                interval=0.1, message="/healthz to report the TLS failure")
            assert time.monotonic() - started < 20
            assert any("CERTIFICATE_VERIFY_FAILED" in p and "uplink.ca_file" in p
                       for p in problems), problems
            st = stream_status(status_port)
            assert "TLS certificate verification failed" in st["uplink"]["tls_error"]
            assert get_status(status_port)["uplink"]["tls_error"]  # type: ignore[index]
            # retried at retry_max_s (0.5 s here), not hammered with a tight backoff
            retries = st["uplink"]["retries"]
            time.sleep(1.0)
            assert stream_status(status_port)["uplink"]["retries"] - retries <= 4
        finally:
            pub.close()
            agent.stop()
    finally:
        broker.stop()


def test_https_to_a_plain_http_cloud_is_a_tls_error(tmp_path: Path, broker: Server) -> None:
    async def main() -> None:
        up = HttpUplink(f"https://127.0.0.1:{broker.port}", timeout_s=5)
        try:
            with pytest.raises(TlsUplinkError, match="TLS handshake failed"):
                await up.send("telemetry", one_batch("tls-plain"))
        finally:
            await up.aclose()

    asyncio.run(main())


def test_mqtt_login_refused_is_reported_at_once(tmp_path: Path) -> None:
    port = free_port()
    d = tmp_path / "mosq"
    d.mkdir()
    (d / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    mosq = Server([find_binary("mosquitto"), "-c", str(d / "mosquitto.conf")], port,
                  d / "mosquitto.out").start()
    try:
        cfg, status_port = write_config(tmp_path, port)
        agent = agent_up(cfg, status_port, tmp_path / "agent.out").start()
        try:
            problems = wait_for(lambda: unhealthy_with(status_port, "refused by the broker"),
                                10, interval=0.1, message="the refused login in /healthz")
            assert any("mqtt agent-telemetry" in p and "authori" in p.lower()
                       for p in problems), problems
            [m] = get_status(status_port)["mqtt"]  # type: ignore[index]
            assert not m["connected"] and m["connect_failures"] >= 1
            assert "refused by the broker" in m["refused"]
        finally:
            agent.stop()
    finally:
        mosq.kill()


def test_mqtt_port_closed_is_reported_before_stuck_after_s(tmp_path: Path) -> None:
    cfg, status_port = write_config(tmp_path, free_port(), extra="mqtt_down_after_s = 1\n")
    agent = agent_up(cfg, status_port, tmp_path / "agent.out").start()
    try:
        problems = wait_for(lambda: unhealthy_with(status_port, "disconnected for"), 10,
                            interval=0.1, message="the closed MQTT port in /healthz")
        assert any("ConnectionRefusedError" in p for p in problems), problems
    finally:
        agent.stop()


def test_an_uplink_without_token_or_cloud_is_announced_at_start(tmp_path: Path,
                                                                mosquitto: Server) -> None:
    """Nothing to send yet, so no batch would fail: the start itself says that the
    uplink has no token and that the cloud does not answer; a reachable cloud with a
    token is announced as such, without the warnings."""
    cfg, status_port = write_config(tmp_path, mosquitto.port)  # no token, nothing listens
    log = tmp_path / "agent.out"
    agent = agent_server(cfg, status_port, log).start()
    try:
        wait_for(lambda: "does not answer" in log.read_text(), 20)
        text = log.read_text()
        assert "uplink.token is not set" in text
        assert "readings are kept in the local log" in text
    finally:
        agent.stop()
    broker = broker_server(tmp_path / "cloud").start()
    try:
        (tmp_path / "b").mkdir()
        cfg, status_port = write_config(tmp_path / "b", mosquitto.port, cloud_port=broker.port)
        cfg.write_text(cfg.read_text().replace("[uplink]\n", '[uplink]\ntoken = "t0ken-123"\n'))
        log = tmp_path / "agent2.out"
        agent = agent_server(cfg, status_port, log).start()
        try:
            wait_for(lambda: "answers" in log.read_text(), 20)
        finally:
            agent.stop()
        assert "does not answer" not in log.read_text()
        assert "uplink.token is not set" not in log.read_text()
    finally:
        broker.stop()
