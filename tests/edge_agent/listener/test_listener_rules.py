"""The listener's pure parts: the [mqtt_listener] section, password hashes, device ids
and the ACL, what a CONNECT is answered, and persistent sessions across a restart."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from listener_testing import passwd_file

from edge_agent.config import parse_config
from edge_agent.listener.auth import (
    Authenticator,
    PasswordFile,
    PasswordFileError,
    may_publish,
    parse_hash,
)
from edge_agent.listener.config import ListenerConfig, check_listener_files
from edge_agent.listener.rules import common_name, connect_verdict, session_expiry
from edge_agent.listener.sessions import SESSIONS_FILE, Sessions
from mqttproto import V5, V311, Connect, Property, Will
from tomlconf import ConfigError

BASE = {"edge_id": "gw", "data_dir": "/tmp/x",
        "streams": [{"name": "t", "topics": ["devices/+/telemetry"]}]}


def _cfg(listener: dict[str, Any], **top: Any) -> Any:
    return parse_config({**BASE, **top, "mqtt_listener": listener}).mqtt_listener


def test_the_section_defaults_and_its_absence() -> None:
    assert parse_config(BASE).mqtt_listener is None  # devices publish to Mosquitto
    cfg = _cfg({"allow_anonymous": True})
    assert cfg.listen == "0.0.0.0:1883" and cfg.acl == ("devices/{device}/#",)
    assert cfg.receive_maximum == 100 and cfg.max_connections == 10_000


@pytest.mark.parametrize(("listener", "top", "key"), [
    ({}, {}, "mqtt_listener.allow_anonymous"),  # nobody could connect
    ({"allow_anonymous": True, "listen": "1883"}, {}, "mqtt_listener.listen"),
    ({"allow_anonymous": True, "tls_cert": "a.pem"}, {}, "mqtt_listener.tls_key"),
    ({"allow_anonymous": True, "tls_client_ca": "ca.pem"}, {}, "mqtt_listener.tls_client_ca"),
    ({"allow_anonymous": True, "acl": ["devices/#/x"]}, {}, "mqtt_listener.acl"),
    ({"allow_anonymous": True, "max_packet_size": 10}, {}, "mqtt_listener.max_packet_size"),
    ({"allow_anonymous": True, "receive_maximum": 0}, {}, "mqtt_listener.receive_maximum"),
    ({"allow_anonymous": True, "bogus": 1}, {}, "mqtt_listener.bogus"),
    ({"allow_anonymous": True, "receive_maximum": 5000}, {}, "ingest.dedup_window"),
])
def test_mistakes_name_their_key(listener: dict[str, Any], top: dict[str, Any],
                                 key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(listener, **top)
    assert str(err.value).startswith(key), str(err.value)


def test_unloadable_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "passwd"
    bad.write_text("alice:plaintext\n")
    with pytest.raises(ConfigError, match="password_file"):
        check_listener_files(ListenerConfig(password_file=bad))
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="tls_cert"):
        check_listener_files(ListenerConfig(tls_cert=tmp_path / "cert.pem",
                                            tls_key=tmp_path / "cert.pem"))


def test_mosquitto_passwd_hashes_verify(tmp_path: Path) -> None:
    pw = PasswordFile(passwd_file(tmp_path, {"alice": "s3cret", "bob": "x"}))
    assert pw.verify("alice", b"s3cret") and pw.verify("bob", b"x")
    assert not pw.verify("alice", b"s3cret ") and not pw.verify("carol", b"x")
    salt = b"0123456789ab"
    six = f"$6${base64.b64encode(salt).decode()}$" + base64.b64encode(
        hashlib.sha512(b"pw" + salt).digest()).decode()
    assert parse_hash(six).matches(b"pw") and not parse_hash(six).matches(b"pX")
    for junk in ("plain", "$7$x$a$b", "$7$101$!!$b", "$5$a$b", "$7$0$YQ==$YQ=="):
        with pytest.raises(PasswordFileError):
            parse_hash(junk)


def test_device_ids_and_the_acl(tmp_path: Path) -> None:
    pw = PasswordFile(passwd_file(tmp_path, {"alice": "s3cret", "bad/name": "x"}))
    auth = Authenticator(pw, allow_anonymous=False, acl=("devices/{device}/#", "fleet/+/{device}"))
    assert auth.authenticate("c1", "alice", b"s3cret", None) == ("alice", 0)
    assert auth.authenticate("c1", "alice", b"nope", None) == ("", 0x86)
    assert auth.authenticate("c1", None, None, None) == ("", 0x86)  # no anonymous
    assert auth.authenticate("c1", None, None, "sensor-7") == ("sensor-7", 0)  # its cert
    assert auth.authenticate("c1", "bad/name", b"x", None)[1] == 0x87  # not a topic level
    assert auth.authenticate("c1", "alice", b"s3cret", "sensor-7")[1] == 0x86  # two names
    anon = Authenticator(None, allow_anonymous=True, acl=("devices/{device}/#",))
    assert anon.authenticate("dev+1", None, None, None) == ("", 0x85)
    acl = auth.filters("alice")
    assert may_publish(acl, "devices/alice/telemetry") and may_publish(acl, "fleet/x/alice")
    assert not may_publish(acl, "devices/bob/telemetry")
    assert not may_publish(acl, "devices/alice2/t") and not may_publish(acl, "fleet/x/alice/y")


def test_the_certificate_common_name() -> None:
    cert = {"subject": ((("countryName", "FR"),), (("commonName", "sensor-7"),))}
    assert common_name(cert) == "sensor-7"
    assert common_name({"subject": ()}) is None and common_name(None) is None


@pytest.mark.parametrize(("packet", "reason"), [
    (Connect(V5, "a", properties={Property.AUTHENTICATION_METHOD: "SCRAM"}), 0x8C),
    (Connect(V5, "a", will=Will("devices/a/x", b"", qos=2)), 0x9B),
    (Connect(V5, "a" * 300), 0x85),
    (Connect(V311, "", clean_start=False), 0x85),  # 3.1.1: no id needs a clean session
    (Connect(V5, "a", will=Will("devices/b/x", b"")), 0x87),  # the ACL covers wills
])
def test_connect_refusals(packet: Connect, reason: int) -> None:
    auth = Authenticator(None, True, ("devices/{device}/#",))
    v = asyncio.run(connect_verdict(packet, None, auth, ListenerConfig(allow_anonymous=True)))
    assert v.reason == reason


def test_what_a_connect_is_granted() -> None:
    auth = Authenticator(None, True, ("devices/{device}/#",))
    cfg = ListenerConfig(allow_anonymous=True, session_expiry_max_s=3600)

    def verdict(p: Connect) -> Any:
        return asyncio.run(connect_verdict(p, None, auth, cfg))

    v = verdict(Connect(V5, "", properties={Property.SESSION_EXPIRY_INTERVAL: 0xFFFFFFFF}))
    assert v.reason == 0 and v.assigned and v.client_id.startswith("auto-")
    assert v.expiry_s == 3600 and v.expiry_changed  # capped, and told so
    props = v.connack_properties(cfg)
    assert props[Property.ASSIGNED_CLIENT_IDENTIFIER] == v.client_id
    assert props[Property.MAXIMUM_QOS] == 1 and props[Property.RECEIVE_MAXIMUM] == 100
    assert props[Property.SESSION_EXPIRY_INTERVAL] == 3600
    assert verdict(Connect(V311, "d", clean_start=False)).expiry_s == 3600
    assert verdict(Connect(V311, "d", clean_start=True)).expiry_s == 0
    assert session_expiry(10, 3600) == 10 and session_expiry(0xFFFFFFFF, 5) == 5


def test_sessions_survive_a_restart_and_expire(tmp_path: Path) -> None:
    async def first_run() -> None:
        s = Sessions(tmp_path, max_sessions=10)
        s.load()
        writer = asyncio.ensure_future(s.run())
        present, old, wait = s.attach("kept", clean_start=False, expiry_s=600, conn="c1")
        assert (present, old, wait) == (False, None, True)
        await asyncio.wait_for(s.durable(), 5)  # the CONNACK waits for this write
        assert "kept" in json.loads((tmp_path / SESSIONS_FILE).read_text())
        assert s.attach("kept", False, 600, "c2") == (True, "c1", False)  # a takeover
        s.attach("brief", clean_start=True, expiry_s=0, conn="c3")
        s.detach("brief", "c3")
        assert "brief" not in s.live
        s.attach("short", False, 1, "c4")
        await asyncio.wait_for(s.durable(), 5)
        s.detach("short", "c4")
        writer.cancel()
        # a kill -9 here: no clean flush of the disconnect times

    asyncio.run(first_run())
    again = Sessions(tmp_path, max_sessions=10)
    assert again.load() == 2
    assert again.attach("kept", False, 600, "c5")[0] is True  # present after the restart
    time.sleep(1.1)
    assert again.sweep() == 1 and "short" not in again.live
    assert again.attach("kept", True, 600, "c6")[0] is False  # a clean start ends it


def test_sessions_are_bounded(tmp_path: Path) -> None:
    s = Sessions(tmp_path, max_sessions=3)
    for i in range(3):
        conn = object()
        s.attach(f"c{i}", False, 600, conn)
        s.detach(f"c{i}", conn)
    s.attach("new", False, 600, "connN")
    assert len(s.live) == 3 and "c0" not in s.live  # the longest-disconnected one goes
