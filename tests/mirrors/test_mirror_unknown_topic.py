"""A mirror of a topic the broker does not have (and will not create) is refused where
it is defined: cloud.toml at start (exit 2 naming the key), ``POST /v1/mirrors`` (400),
a stored API mirror whose topic went away (not started, logged); it never retries for
ever. With auto-creation on, the topic may still appear, so the mirror is accepted."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from cloud_broker.config import ConfigError, parse_config
from cloud_broker.http import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SQL_MIRROR = {"topic": "telemetri", "target": "sql", "path": "m.db"}


def cfg(tmp_path: Path, **extra: Any) -> Any:
    return parse_config({"data_dir": str(tmp_path / "data"), "auth": {"required": False},
                         "topics": {"telemetry": {"partitions": 1}}, **extra}, tmp_path)


def test_config_refuses_a_mirror_of_an_unknown_topic(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        cfg(tmp_path, mirrors={"m": SQL_MIRROR})
    assert err.value.key == "mirrors.m.topic"
    assert "'telemetri' does not exist" in str(err.value) and "telemetry" in str(err.value)
    # auto-creation may make it later; a standalone mirror reads another broker
    assert cfg(tmp_path, mirrors={"m": SQL_MIRROR}, auto_create_partitions=1).mirrors
    assert cfg(tmp_path, mirrors={"m": {**SQL_MIRROR, "run": "standalone"}}).mirrors
    conf = tmp_path / "cloud.toml"
    conf.write_text(f'data_dir = "{tmp_path / "d"}"\n[topics.telemetry]\n'
                    '[mirrors.m]\ntopic = "telemetri"\ntarget = "sql"\npath = "m.db"\n')
    res = subprocess.run([sys.executable, "-m", "cloud_broker.cli", "serve", "--config",
                          str(conf)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "mirrors.m.topic: topic 'telemetri' does not exist" in res.stderr


def test_api_refuses_and_stored_mirror_is_not_started(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    c = cfg(tmp_path)
    with TestClient(create_app(c)) as client:
        r = client.post("/v1/mirrors", json={"name": "bad", **SQL_MIRROR})
        assert r.status_code == 400, r.text
        assert "does not exist" in r.json()["error"] and r.json()["field"] == "topic"
        assert client.get("/v1/mirrors").json()["mirrors"] == []
        r = client.post("/v1/mirrors", json={"name": "good", **SQL_MIRROR,
                                             "topic": "telemetry"})
        assert r.status_code == 201, r.text
    # the topic goes away from the config: the stored mirror is not started
    c2 = parse_config({"data_dir": str(tmp_path / "data"), "auth": {"required": False},
                       "topics": {"other": {"partitions": 1}}}, tmp_path)
    with caplog.at_level(logging.ERROR), TestClient(create_app(c2)) as client:
        assert client.get("/v1/mirrors").json()["mirrors"] == []
    assert any("good" in r.getMessage() and "does not exist" in r.getMessage()
               for r in caplog.records)
