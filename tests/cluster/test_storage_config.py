"""``[storage]`` / ``[storage.jetstream]`` of cloud.toml: what is accepted, what is
refused with a ConfigError naming the key, and hostile tables (hypothesis) never raise
anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_broker.config import ConfigError, parse_config


def config(storage: Any) -> Any:
    return parse_config({"data_dir": "/data", "storage": storage}, Path("/etc/es"))


def test_local_is_the_default() -> None:
    assert parse_config({"data_dir": "/d"}).storage.backend == "local"
    assert config({"backend": "local"}).storage.backend == "local"


def test_jetstream_settings_are_read() -> None:
    cfg = config({"backend": "jetstream", "jetstream": {
        "servers": ["nats://n1:4222", "tls://n2:4222"], "replicas": 3, "user": "b",
        "password": "pw", "stream_prefix": "prod-1", "request_timeout_s": 2,
        "readahead_bytes": 0, "readahead_total_bytes": 1 << 20}}).storage
    js = cfg.jetstream
    assert (js.readahead_bytes, js.readahead_total_bytes) == (0, 1 << 20)
    assert cfg.backend == "jetstream" and js.servers == ("nats://n1:4222", "tls://n2:4222")
    assert (js.replicas, js.user, js.password, js.stream_prefix) == (3, "b", "pw", "prod-1")
    assert "pw" not in repr(js)
    creds = config({"backend": "jetstream", "jetstream": {
        "servers": ["nats://n1:4222"], "creds_file": "b.creds"}}).storage.jetstream
    assert creds.creds_file == Path("/etc/es/b.creds") and creds.replicas == 3


@pytest.mark.parametrize(("storage", "key"), [
    ({"backend": "kafka"}, "storage.backend"),
    ({"backend": "jetstream"}, "storage.jetstream"),
    ({"backend": "local", "jetstream": {}}, "storage.jetstream"),
    ({"backend": "jetstream", "jetstream": {"servers": []}}, "storage.jetstream.servers"),
    ({"backend": "jetstream", "jetstream": {"servers": ["http://n:80"]}},
     "storage.jetstream.servers[0]"),
    ({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"], "replicas": 7}},
     "storage.jetstream.replicas"),
    ({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"], "user": "u"}},
     "storage.jetstream.password"),
    ({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"], "token": "t",
                                            "creds_file": "c"}}, "storage.jetstream.token"),
    ({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"],
                                            "stream_prefix": "a.b"}},
     "storage.jetstream.stream_prefix"),
    ({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"],
                                            "readahead_bytes": -1}},
     "storage.jetstream.readahead_bytes"),
    ({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"], "surprise": 1}},
     "storage.jetstream.surprise"),
])
def test_mistakes_name_their_key(storage: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(storage)
    assert key in str(info.value)


def test_a_token_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        config({"backend": "jetstream", "jetstream": {"servers": ["nats://n:1"],
                                                      "token": 5}})
    assert "storage.jetstream.token" in str(info.value)


toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4), max_leaves=12)
keys = st.sampled_from(["backend", "jetstream", "servers", "replicas", "user", "password",
                        "token", "creds_file", "stream_prefix", "request_timeout_s",
                        "cache_bytes", "readahead_bytes", "readahead_total_bytes", "x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, toml_values | st.sampled_from(["jetstream", "local"]),
                       max_size=5),
       st.dictionaries(keys, toml_values | st.just(["nats://a:1"]), max_size=6))
def test_hostile_storage_tables_are_config_errors_or_configs(top: dict[str, Any],
                                                             js: dict[str, Any]) -> None:
    if "jetstream" in top and isinstance(top["jetstream"], dict):
        top = {**top, "jetstream": js}
    try:
        cfg = config(top)
    except ConfigError:
        return
    assert cfg.storage is None or cfg.storage.backend in ("local", "jetstream")
