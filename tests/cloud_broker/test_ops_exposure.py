"""What the broker shows to whom: credentials in mirror URLs are masked everywhere (API,
log, errors), and with ``[auth] protect_metrics`` the names in /metrics, /openapi.json and
the /healthz detail need a read token while a bare /healthz still answers probes.

On main: GET /v1/mirrors and the log showed ``http://user:pass@...`` and
``nats://user:pass@...``; /metrics, /openapi.json and /healthz were open to anyone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from cloud_broker.config import parse_config
from cloud_broker.http import create_app
from cloud_broker.redact import mask_secrets, redact
from tests.helpers import broker_server, free_port, wait_for

READ, INGEST, ADMIN = "reader-token-1", "ingest-token-1", "admin-token-1"
TOKENS = [{"token": READ, "permissions": ["read"]},
          {"token": INGEST, "permissions": ["ingest"]},
          {"token": ADMIN, "permissions": ["admin"]}]
SECRET = "hunter2-pw"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("text", "masked"), [
    ("http://user:pw@host:8080/x", "http://user:***@host:8080/x"),
    ("nats://user:pw@a:4222,nats://b:4222", "nats://user:***@a:4222,nats://b:4222"),
    ("nats://s3cr3ttoken@a:4222", "nats://***@a:4222"),
    ("postgresql://app:pw@db/x?sslmode=require", "postgresql://app:***@db/x?sslmode=require"),
    ("https://h/x?token=abc&a=1", "https://h/x?token=***&a=1"),
    ("error: ConnectError('http://u:p@h:1/v1')", "error: ConnectError('http://u:***@h:1/v1')"),
    ("http://host:8080/plain", "http://host:8080/plain"),
    ("no url here", "no url here"),
])
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_redact_walks_json() -> None:
    doc = {"a": ["http://u:p@h"], "b": {"c": "x://t@h"}, "n": 1}
    assert redact(doc) == {"a": ["http://u:***@h"], "b": {"c": "x://***@h"}, "n": 1}


def _mirrors_toml(nats_port: int, broker_port: int) -> str:
    return (f'[mirrors.dr]\ntopic = "telemetry"\ntarget = "broker"\n'
            f'url = "http://admin:{SECRET}@127.0.0.1:{broker_port}"\ntoken = "{SECRET}-tok"\n'
            f'max_backoff_s = 0.2\ntimeout_s = 0.5\n'
            f'[mirrors.js]\ntopic = "telemetry"\ntarget = "nats"\n'
            f'servers = ["nats://u:{SECRET}@127.0.0.1:{nats_port}"]\n'
            f'max_backoff_s = 0.2\ntimeout_s = 0.5\n')


@pytest.fixture
def broker_with_mirrors(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real broker whose two mirrors point at dead ports (they retry and log)."""
    server = broker_server(tmp_path / "b", tokens=TOKENS,
                           extra=_mirrors_toml(free_port(), free_port())).start()
    try:
        yield f"http://127.0.0.1:{server.port}", server.log_path
    finally:
        server.stop()


def test_mirror_credentials_never_shown(broker_with_mirrors: tuple[str, Path]) -> None:
    base, log_path = broker_with_mirrors

    # Both mirrors fail against dead ports, with the URL in their errors.
    wait_for(lambda: (t := log_path.read_text(errors="replace")).count("failed (attempt") >= 2
             and "mirror dr" in t and "mirror js" in t, timeout=30,
             message="both mirrors failing in the log")
    doc = httpx.get(f"{base}/v1/mirrors", headers=bearer(READ), timeout=5).json()
    mirrors = {m["name"]: m for m in doc["mirrors"]}
    text = httpx.get(f"{base}/v1/mirrors", headers=bearer(READ), timeout=5).text
    assert SECRET not in text
    assert mirrors["dr"]["url"].startswith("http://admin:***@127.0.0.1:")
    assert mirrors["dr"]["token"] == "***"
    assert mirrors["js"]["servers"][0].startswith("nats://u:***@127.0.0.1:")
    # A bad definition through the API: the 400 names the field, not the password.
    bad = httpx.post(f"{base}/v1/mirrors", headers=bearer(ADMIN), timeout=5,
                     json={"name": "x", "topic": "telemetry", "target": "broker",
                           "url": f"http://a:{SECRET}@h:99999"})
    assert bad.status_code == 400 and bad.json()["field"] == "url"
    assert SECRET not in bad.text
    # The log mentions the mirrors, their URLs and failures, never the password.
    log = log_path.read_text(errors="replace")
    assert "http://admin:***@" in log and "nats://u:***@" in log
    assert SECRET not in log


def _app(tmp_path: Path, protect: bool) -> TestClient:
    cfg = parse_config({
        "data_dir": str(tmp_path / "data"),
        "topics": {"telemetry": {"partitions": 1}},
        "tokens": TOKENS,
        "auth": {"protect_metrics": protect},
    })
    return TestClient(create_app(cfg))


def test_protected_ops_endpoints_need_a_read_token(tmp_path: Path) -> None:
    with _app(tmp_path, protect=True) as c:
        for path in ("/metrics", "/openapi.json"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=bearer("nobody-issued-this")).status_code == 401
            assert c.get(path, headers=bearer(INGEST)).status_code == 403
            assert c.get(path, headers=bearer(READ)).status_code == 200
        bare = c.get("/healthz")
        assert bare.status_code == 200 and bare.json() == {"status": "ok"}
        assert "telemetry" not in bare.text
        detail = c.get("/healthz", headers=bearer(READ))
        assert detail.status_code == 200 and detail.json()["topics"] == ["telemetry"]
        assert c.get("/healthz", headers=bearer("nobody-issued-this")).status_code == 401
        assert c.get("/healthz", headers=bearer(INGEST)).status_code == 403
        assert "broker_" in c.get("/metrics", headers=bearer(ADMIN)).text


def test_unprotected_ops_endpoints_stay_open_by_default(tmp_path: Path) -> None:
    with _app(tmp_path, protect=False) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/healthz").json()["topics"] == ["telemetry"]
