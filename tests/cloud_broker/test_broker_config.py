"""cloud.toml validation: every mistake fails at start and names the key that is wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cloud_broker.cli import main
from cloud_broker.config import ConfigError, load_config, parse_config

BASE = {"data_dir": "/var/lib/cloud-broker"}


def config_error(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **raw})
    return info.value


@pytest.mark.parametrize(("raw", "key"), [
    ({"listen": "8080"}, "listen"),
    ({"listen": "127.0.0.1:99999"}, "listen"),
    ({"listen": 8080}, "listen"),
    ({"max_body_bytes": 10}, "max_body_bytes"),
    ({"max_body_bytes": "8MiB"}, "max_body_bytes"),
    ({"commit_interval_ms": -1}, "commit_interval_ms"),
    ({"commit_interval_ms": True}, "commit_interval_ms"),
    ({"state_checkpoint_ms": 1}, "state_checkpoint_ms"),
    ({"auto_create_partitions": -1}, "auto_create_partitions"),
    ({"retention": 5}, "retention"),
    ({"topics": []}, "topics"),
    ({"topics": {"telemetry": 8}}, "topics.telemetry"),
    ({"topics": {"../etc": {"partitions": 1}}}, "topics.../etc"),
    ({"topics": {"tele\n": {"partitions": 1}}}, "topics.tele\n"),
    ({"topics": {"a..b": {"partitions": 1}}}, "topics.a..b"),
    ({"topics": {"t": {"partitions": 0}}}, "topics.t.partitions"),
    ({"topics": {"t": {"partitions": True}}}, "topics.t.partitions"),
    ({"topics": {"t": {"partitions": 2, "retention_ms": 0}}}, "topics.t.retention_ms"),
    ({"topics": {"t": {"partitions": 2, "segment_bytes": 100}}}, "topics.t.segment_bytes"),
    ({"topics": {"t": {"partitions": 2, "replicas": 3}}}, "topics.t.replicas"),
    ({"tokens": {"token": "x"}}, "tokens"),
    ({"tokens": ["s3cret-edge"]}, "tokens[0]"),
    ({"tokens": [{"token": "short"}]}, "tokens[0].token"),
    ({"tokens": [{"token": "long-enough-1"}, {"token": "long-enough-2", "edge_id": "a/b"}]},
     "tokens[1].edge_id"),
    ({"tokens": [{"token": "long-enough-1", "permissions": ["write"]}]},
     "tokens[0].permissions"),
    ({"tokens": [{"token": "long-enough-1", "permissions": "ingest"}]},
     "tokens[0].permissions"),
    ({"tokens": [{"token": "long-enough-1", "edge": "gw-1"}]}, "tokens[0].edge"),
    ({"auth": {"required": "yes"}}, "auth.required"),
    ({"auth": {"tokens_db": ""}}, "auth.tokens_db"),
    ({"auth": {"db": "x"}}, "auth.db"),
    ({"tls": {"cert": "c.pem"}}, "tls.key"),
    ({"tls": {"cert": "c.pem", "key": 5}}, "tls.key"),
    ({"tls": "on"}, "tls"),
    ({"listen": "http://0.0.0.0:8080"}, "listen"),
    ({"listen": "0.0.0.0:8080/x"}, "listen"),
    ({"listen": ":8080"}, "listen"),
    ({"listen": "[::1:8080"}, "listen"),
    ({"auth": {"protect_metrics": "yes"}}, "auth.protect_metrics"),
    ({"limits": 5}, "limits"),
    ({"limits": {"max_connections": 0}}, "limits.max_connections"),
    ({"limits": {"header_timeout_s": 0}}, "limits.header_timeout_s"),
    ({"limits": {"header_timeout_s": float("nan")}}, "limits.header_timeout_s"),
    ({"limits": {"keep_alive_s": True}}, "limits.keep_alive_s"),
    ({"limits": {"max_header_bytes": 100}}, "limits.max_header_bytes"),
    ({"limits": {"idle_s": 5}}, "limits.idle_s"),
])
def test_error_names_the_key(raw: dict, key: str) -> None:
    err = config_error(raw)
    assert err.key == key
    assert str(err).startswith(f"{key}: ")


def test_data_dir_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"listen": "127.0.0.1:8080"})
    assert info.value.key == "data_dir"
    with pytest.raises(ConfigError) as info:
        parse_config({"data_dir": 5})
    assert info.value.key == "data_dir"


def test_full_example_parses_with_relative_paths_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text(textwrap.dedent("""
        data_dir = "data"
        listen = "[::1]:8443"
        max_body_bytes = 4096
        commit_interval_ms = 0.5

        [tls]
        cert = "cert.pem"
        key = "/etc/key.pem"

        [topics.telemetry]
        partitions = 8
        retention_bytes = 1000000

        [[tokens]]
        token = "s3cret-edge-1"
        edge_id = "gw-001"
        permissions = ["ingest", "read"]

        [auth]
        tokens_db = "tokens.db"
    """))
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "data"
    assert (cfg.host, cfg.port) == ("::1", 8443)
    assert cfg.max_body_bytes == 4096 and cfg.commit_interval_ms == 0.5
    assert cfg.tls_cert == tmp_path / "cert.pem" and cfg.tls_key == Path("/etc/key.pem")
    assert cfg.topics["telemetry"].partitions == 8
    assert cfg.topics["telemetry"].retention_bytes == 1_000_000
    assert cfg.tokens[0].edge_id == "gw-001"
    assert cfg.tokens[0].permissions == frozenset({"ingest", "read"})
    assert cfg.tokens_db == tmp_path / "tokens.db" and cfg.auth_required


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert info.value.key == str(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(bad)
    assert info.value.key == str(bad)


def test_cli_prints_the_key_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text('data_dir = "d"\n[topics.t]\npartitions = 0\n')
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "configuration error: topics.t.partitions: must be an integer >= 1" in err


def test_limits_and_listen_forms() -> None:
    cfg = parse_config({**BASE, "listen": "[::]:8443",
                        "limits": {"max_connections": 50, "header_timeout_s": 2.5}})
    assert (cfg.host, cfg.port) == ("::", 8443)
    assert cfg.limits.max_connections == 50 and cfg.limits.header_timeout_s == 2.5
    assert cfg.limits.keep_alive_s == 5.0 and cfg.limits.max_header_bytes == 65536
    assert not cfg.protect_metrics
    for listen, host in (("0.0.0.0:8080", "0.0.0.0"), ("broker.example:80", "broker.example"),
                         ("localhost:0", "localhost")):
        assert parse_config({**BASE, "listen": listen}).host == host


def test_config_errors_never_echo_a_password() -> None:
    raw = {**BASE, "mirrors": {"dr": {"topic": "t", "target": "broker",
                                      "url": "http://admin:hunter2@dr:99999"}}}
    err = config_error(raw)
    assert err.key == "mirrors.dr.url" and "hunter2" not in str(err)
    assert "admin:***@" in str(err)
