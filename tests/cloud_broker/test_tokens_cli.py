"""``cloud-broker tokens add|list|revoke`` against a real broker (uvicorn subprocess): a
broker without tokens warns at start and refuses everything; a token added by the
command is accepted at the next request with its role and scopes, and refused once
revoked; mistakes are one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, free_port, wait_for
from uplink import Batch, UplinkRecord, encode_batch


def tokens(cfg: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud_broker.cli", "tokens", *args,
                           "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ingest(url: str, token: str, topic: str, edge: str) -> httpx.Response:
    recs = tuple(UplinkRecord(o, b"dev-1", 1000 + o, b"v") for o in range(3))
    body, enc = encode_batch(Batch(edge, "telemetry", "g1", 0, 2, recs))
    return httpx.post(f"{url}/v1/ingest/{topic}", content=body, timeout=5, headers={
        **bearer(token), "Content-Type": "application/cbor", "Content-Encoding": enc})


@pytest.fixture
def broker_cfg(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\nlisten = "127.0.0.1:{port}"\n'
                   f'[auth]\ntokens_db = "{tmp_path / "tokens.db"}"\n'
                   "[topics.telemetry]\npartitions = 2\n[topics.alarms]\npartitions = 1\n")
    return cfg, port


def test_tokens_round_trip_through_a_real_broker(tmp_path: Path,
                                                 broker_cfg: tuple[Path, int]) -> None:
    cfg, port = broker_cfg
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "broker.out"
    broker = Server([sys.executable, "-m", "cloud_broker.cli", "serve", "--config", str(cfg)],
                    port, log).start()
    try:
        wait_for(lambda: "no tokens" in log.read_text(), 10)
        assert "every request is refused with 401" in log.read_text()
        assert httpx.get(f"{url}/v1/topics", headers=bearer("anything-1"),
                         timeout=5).status_code == 401

        res = tokens(cfg, "add", "--role", "reader", "--name", "dashboards")
        assert res.returncode == 0, res.stderr
        reader = res.stdout.strip()
        assert len(reader) >= 24 and "shown only now" in res.stderr
        assert httpx.get(f"{url}/v1/topics", headers=bearer(reader), timeout=5).status_code \
            == 200

        res = tokens(cfg, "add", "--role", "edge", "--edge-id", "gw-1", "--topics",
                     "telemetry", "--token-env", "EDGE_TOKEN",
                     env={"EDGE_TOKEN": "gw-1-secret-token"})
        assert res.returncode == 0 and res.stdout == "", res.stderr
        edge = "gw-1-secret-token"
        assert ingest(url, edge, "telemetry", "gw-1").status_code == 200
        assert ingest(url, edge, "alarms", "gw-1").status_code == 403  # topics scope
        assert ingest(url, edge, "telemetry", "gw-2").status_code == 403  # another edge
        assert httpx.get(f"{url}/v1/topics", headers=bearer(edge), timeout=5).status_code \
            == 403  # an edge token cannot read
        assert ingest(url, reader, "telemetry", "gw-1").status_code == 403

        res = tokens(cfg, "list")
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 3 and reader not in res.stdout and edge not in res.stdout
        rrow = next(ln for ln in lines if "dashboards" in ln)
        erow = next(ln for ln in lines if "gw-1" in ln)
        assert rrow.split()[1] == "reader" and erow.split()[1] == "edge"
        assert "telemetry" in erow

        res = tokens(cfg, "revoke", "--id", rrow.split()[0])
        assert res.returncode == 0, res.stderr
        assert httpx.get(f"{url}/v1/topics", headers=bearer(reader), timeout=5).status_code \
            == 401
        assert tokens(cfg, "revoke", "--id", rrow.split()[0]).returncode == 1  # gone
        res = tokens(cfg, "revoke", "--token-env", "T", env={"T": edge})
        assert res.returncode == 0
        assert ingest(url, edge, "telemetry", "gw-1").status_code == 401
    finally:
        broker.stop()


def test_token_mistakes_are_one_line_and_exit_2(tmp_path: Path,
                                                broker_cfg: tuple[Path, int]) -> None:
    cfg, _ = broker_cfg
    for args, says in [
        (("add", "--role", "edge"), "--edge-id"),
        (("add", "--role", "edge", "--edge-id", "../x"), "--edge-id"),
        (("add", "--role", "reader", "--edge-id", "gw-1"), "not bound to an edge"),
        (("add", "--role", "reader", "--topics", ","), "--topics"),
        (("add", "--role", "admin", "--token-env", "NOPE_UNSET"), "NOPE_UNSET"),
        (("revoke",), "--id"),
        (("revoke", "--id", "xyz"), "hex digits"),
    ]:
        res = tokens(cfg, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert says in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    no_db = tmp_path / "plain.toml"
    no_db.write_text(f'data_dir = "{tmp_path / "d2"}"\n')
    res = tokens(no_db, "list")
    assert res.returncode == 2 and "auth.tokens_db" in res.stderr
    unwritable = tmp_path / "ro.toml"
    unwritable.write_text(f'data_dir = "{tmp_path / "d3"}"\n[auth]\n'
                          f'tokens_db = "{tmp_path / "missing-dir" / "tokens.db"}"\n')
    res = tokens(unwritable, "add", "--role", "reader")
    assert res.returncode == 2 and "tokens database" in res.stderr, res.stderr
