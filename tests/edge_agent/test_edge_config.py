"""edge.toml validation (every error names its key), environment overrides, and the
CLI's exit 2 on a bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import ConfigError, apply_env, load_config, parse_config


def base() -> dict[str, Any]:
    return {"edge_id": "gw1", "data_dir": "/tmp/x",
            "streams": [{"name": "telemetry", "topics": ["devices/+/telemetry"]}]}


def with_(path: str, value: Any) -> dict[str, Any]:
    raw = base()
    keys = path.split(".")
    target: Any = raw
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
    target[keys[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "key"), [
    ("edge_id", "../x", "edge_id"),
    ("edge_id", "gw..1", "edge_id"),  # the uplink refuses ".." anywhere: so does the config
    ("edge_id", "gw-1\n", "edge_id"),
    ("data_dir", 5, "data_dir"),
    ("mqtt.port", 70000, "mqtt.port"),
    ("mqtt.port", "1883", "mqtt.port"),
    ("mqtt.receive_maximum", 0, "mqtt.receive_maximum"),
    ("ingest.dedup_window", 10, "ingest.dedup_window"),  # below receive_maximum (1000)
    ("mqtt.session_expiry_s", -1, "mqtt.session_expiry_s"),
    # held PUBACKs and trickle readings: waits are bounded, not free-form
    ("ingest.gather_ms", 5000, "ingest.gather_ms"),
    ("uplink.min_batch_linger_ms", 3_600_000, "uplink.min_batch_linger_ms"),
    ("mqtt.bogus", 1, "mqtt.bogus"),
    ("uplink.url", "ftp://x", "uplink.url"),
    ("uplink.url", "http://127.0.0.1:99999", "uplink.url"),
    ("uplink.url", "http://127.0.0.1:0", "uplink.url"),
    ("uplink.url", "http://127.0.0.1:80x", "uplink.url"),
    ("uplink.url", "http://:8080", "uplink.url"),
    ("uplink.url", "127.0.0.1:8080", "uplink.url"),
    ("mqtt.host", "mqtt://127.0.0.1", "mqtt.host"),
    ("mqtt.host", "127.0.0.1:1883", "mqtt.host"),
    ("status.listen", "127.0.0.1:99999", "status.listen"),
    ("status.listen", "http://127.0.0.1:9100", "status.listen"),
    ("uplink.compression", "lz4", "uplink.compression"),
    ("ingest.max_payload_bytes", 0, "ingest.max_payload_bytes"),
    ("ingest.unmatched_topics", ["a/#/b"], "ingest.unmatched_topics"),
    ("ingest.batch_max_messages", 0, "ingest.batch_max_messages"),
    ("status.listen", "nowhere", "status.listen"),
    ("status.stuck_after_s", 0, "status.stuck_after_s"),
    ("status.json_logs", "yes", "status.json_logs"),
    ("streams.0.full_policy", "drop_newest", "streams[0].full_policy"),
    ("streams.0.qos", 2, "streams[0].qos"),
    ("streams.0.topics", [], "streams[0].topics"),
    ("streams.0.device_key", "topic:devices/+/x", "streams[0].device_key"),
    ("streams.0.payload", "xml", "streams[0].payload"),
    ("streams.0.max_bytes", 100, "streams[0].max_bytes"),
    ("streams.0.name", "a/b", "streams[0].name"),
])
def test_errors_name_the_key(path: str, value: Any, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_(path, value))
    assert err.value.key == key
    assert str(err.value).startswith(key + ":")


def test_missing_streams_and_duplicates() -> None:
    raw = base()
    raw["streams"] = []
    with pytest.raises(ConfigError, match=r"^streams:"):
        parse_config(raw)
    raw["streams"] = [{"name": "a", "topics": ["x"]}, {"name": "a", "topics": ["y"]}]
    with pytest.raises(ConfigError, match="used twice"):
        parse_config(raw)


def test_env_overrides_sections_and_stream_elements() -> None:
    raw = apply_env(base(), {"EDGE_AGENT__MQTT__PORT": "2883",
                             "EDGE_AGENT__UPLINK__TOKEN": "s3cret",
                             "EDGE_AGENT__STREAMS__0__MAX_BYTES": "1048576",
                             "EDGE_AGENT__STATUS__JSON_LOGS": "true",
                             "OTHER": "ignored"})
    cfg = parse_config(raw)
    assert cfg.mqtt.port == 2883
    assert cfg.uplink.token == "s3cret"
    assert cfg.streams[0].max_bytes == 1_048_576
    assert cfg.status.json_logs is True
    assert base()["streams"][0].get("max_bytes") is None  # the input was not modified
    with pytest.raises(ConfigError, match="EDGE_AGENT__STREAMS__3__QOS"):
        apply_env(base(), {"EDGE_AGENT__STREAMS__3__QOS": "0"})


def test_load_config_file_and_env(tmp_path: Path) -> None:
    p = tmp_path / "edge.toml"
    p.write_text('edge_id = "gw1"\ndata_dir = "data"\n[[streams]]\nname = "t"\n'
                 'topics = ["a/+"]\ndevice_key = "topic:a/{device}"\n')
    cfg = load_config(p, {"EDGE_AGENT__MQTT__HOST": "broker.local"})
    assert cfg.data_dir == tmp_path / "data"  # relative to the file
    assert cfg.mqtt.host == "broker.local"
    assert cfg.mqtt.client_id == "edge-agent-gw1"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_cli_run_exits_2_naming_the_key(tmp_path: Path) -> None:
    p = tmp_path / "edge.toml"
    p.write_text('edge_id = "gw1"\ndata_dir = "d"\n[mqtt]\nport = 0\n'
                 '[[streams]]\nname = "t"\ntopics = ["a"]\n')
    res = run_cli("run", "--config", str(p))
    assert res.returncode == 2
    assert "configuration error: mqtt.port:" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("run", "--config", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_cli_env_override_is_validated_too(tmp_path: Path) -> None:
    p = tmp_path / "edge.toml"
    p.write_text('edge_id = "gw1"\ndata_dir = "d"\n[[streams]]\nname = "t"\ntopics = ["a"]\n')
    res = run_cli("check-config", "--config", str(p))
    assert res.returncode == 0, res.stderr
    res = run_cli("check-config", "--config", str(p),
                  env={"EDGE_AGENT__STREAMS__0__FULL_POLICY": "explode"})
    assert res.returncode == 2 and "streams[0].full_policy" in res.stderr


def test_cli_run_refuses_a_busy_status_port(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = tmp_path / "edge.toml"
        p.write_text(f'edge_id = "gw1"\ndata_dir = "d"\n[status]\nlisten = "127.0.0.1:{port}"\n'
                     '[[streams]]\nname = "t"\ntopics = ["a"]\n')
        res = run_cli("run", "--config", str(p))
    assert res.returncode == 2
    assert "status.listen" in res.stderr


def test_mqtt_protocol_defaults_to_5_and_accepts_only_known_versions() -> None:
    from edge_agent.config import ConfigError, parse_config

    base = {"edge_id": "e1", "data_dir": "/tmp/x",
            "streams": [{"name": "t", "topics": ["devices/+/telemetry"]}]}
    assert parse_config(base).mqtt.protocol == "5"
    assert parse_config({**base, "mqtt": {"protocol": "3.1.1"}}).mqtt.protocol == "3.1.1"
    with pytest.raises(ConfigError, match=r"mqtt\.protocol"):
        parse_config({**base, "mqtt": {"protocol": "4"}})


@pytest.mark.parametrize(("section", "line", "key"), [
    ("uplink", 'url = "http://127.0.0.1:99999"', "uplink.url"),
    ("uplink", 'url = "tcp://cloud:8080"', "uplink.url"),
    ("status", 'listen = "http://0.0.0.0:9100"', "status.listen"),
    ("mqtt", 'host = "mqtt://broker"', "mqtt.host"),
])
def test_cli_refuses_bad_addresses_in_one_line(tmp_path: Path, section: str, line: str,
                                               key: str) -> None:
    p = tmp_path / "edge.toml"
    p.write_text(f'edge_id = "gw1"\ndata_dir = "d"\n[{section}]\n{line}\n'
                 '[[streams]]\nname = "t"\ntopics = ["a"]\n')
    res = run_cli("check-config", "--config", str(p))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"configuration error: {key}: " in lines[0], res.stderr


def test_good_addresses_still_pass() -> None:
    for url in ("https://cloud.example:8443", "http://[::1]:8080/prefix", "http://10.0.0.1"):
        assert parse_config(with_("uplink.url", url)).uplink.url == url.rstrip("/")
    for listen in ("127.0.0.1:0", "[::1]:9100", "localhost:9100"):
        assert parse_config(with_("status.listen", listen)).status.listen == listen
    for host in ("mosquitto", "10.1.2.3", "::1", "mqtt.example.org"):
        assert parse_config(with_("mqtt.host", host)).mqtt.host == host


@pytest.mark.parametrize("key", ["uplink.ca_file", "mqtt.tls_ca"])
def test_cli_refuses_a_missing_or_bad_ca_file_in_one_line(tmp_path: Path, key: str) -> None:
    section, name = key.split(".")
    for value, expect in ((tmp_path / "nowhere.pem", "No such file"),
                          (tmp_path / "edge.toml", "holds no PEM certificate")):
        p = tmp_path / "edge.toml"
        p.write_text(f'edge_id = "gw1"\ndata_dir = "d"\n[{section}]\n{name} = "{value}"\n'
                     '[[streams]]\nname = "t"\ntopics = ["a"]\n')
        for command in ("check-config", "run"):
            res = run_cli(command, "--config", str(p))
            assert res.returncode == 2, res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and f"configuration error: {key}: " in lines[0], res.stderr
            assert expect in lines[0]
