"""``[kafka]`` in cloud.toml: checked up front, every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_broker.config import ConfigError, parse_config


def _parse(kafka: dict) -> object:
    return parse_config({"data_dir": "/tmp/x", "kafka": kafka}, Path("/"))


def test_listen_and_advertised() -> None:
    cfg = parse_config({"data_dir": "d", "kafka": {
        "listen": "0.0.0.0:9092", "advertised": "broker.example.com:19092",
        "compression": "zstd", "sasl": False}}, Path("/"))
    k = cfg.kafka
    assert k is not None
    assert (k.host, k.port, k.advertised_host, k.advertised_port) == (
        "0.0.0.0", 9092, "broker.example.com", 19092)
    assert k.compression == "zstd" and k.sasl is False
    assert parse_config({"data_dir": "d"}, Path("/")).kafka is None


@pytest.mark.parametrize(("kafka", "key"), [
    ({}, "kafka.listen"),
    ({"listen": "nope"}, "kafka.listen"),
    ({"listen": "127.0.0.1:9092", "compression": "lz4"}, "kafka.compression"),
    ({"listen": "127.0.0.1:9092", "max_request_bytes": 10}, "kafka.max_request_bytes"),
    ({"listen": "127.0.0.1:9092", "bogus": 1}, "kafka.bogus"),
])
def test_errors_name_the_key(kafka: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(kafka)
    assert key in str(e.value)
