"""The uplink over TLS: a broker subprocess with a certificate from a CA made here.

The certificates come from the ``openssl`` CLI (the ``cryptography`` package is not a
dependency): a throw-away CA, and a server certificate for 127.0.0.1 signed by it.
HttpUplink trusts the broker only when given that CA as ``ca_file``; without it the
handshake fails, which the uplink reports as retryable (the forwarder keeps retrying
with backoff and shows the error in ``last_error``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.outgoing import Outgoing
from edge_agent.uplink_http import HttpUplink, RetryableUplinkError
from tests.helpers import Server, find_binary, free_port, write_broker_config
from tests.helpers_uplink import edge_config, fill, open_edge, read_cloud, run_until, verify_cloud
from uplink import Ack, AckStatus, Batch, UplinkRecord


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([find_binary("openssl"), *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA and a server certificate for 127.0.0.1."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=edgestream test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
            cwd=d)
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_certs(tmp / "certs")
    port = free_port()
    cfg = write_broker_config(tmp / "broker", port, extra=f'[tls]\ncert = "{cert}"\n'
                                                           f'key = "{key}"\n')
    ctx = ssl.create_default_context(cafile=str(ca))

    def ready() -> bool:
        try:
            return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ctx,
                             timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    server = Server([sys.executable, "-m", "cloud_broker.cli", "serve", "--config", str(cfg)],
                    port, tmp / "broker.out", env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    ready=ready).start()
    try:
        yield server, ca
    finally:
        server.stop()


def one_batch(gen: str, base: int = 0) -> Outgoing:
    recs = tuple(UplinkRecord(o, b"dev-%d" % (o % 3), 1, b'{"seq":%d}' % o)
                 for o in range(base, base + 10))
    return Outgoing.encode(Batch("edge-1", "telemetry", gen, base, base + 9, recs), "zstd")


def test_uplink_with_the_ca_file_succeeds(tls_broker: tuple[Server, Path]) -> None:
    server, ca = tls_broker

    async def main() -> Ack:
        up = HttpUplink(f"https://127.0.0.1:{server.port}", ca_file=ca)
        try:
            reply = await up.send("telemetry", one_batch("tls-ok"))
        finally:
            await up.aclose()
        assert isinstance(reply, Ack)
        return reply

    ack = asyncio.run(main())
    assert ack.status is AckStatus.WRITTEN and ack.acked_offset == 9


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_uplink_without_the_ca_fails_retryably(tls_broker: tuple[Server, Path],
                                               scheme: str) -> None:
    server, _ca = tls_broker

    async def main() -> None:
        up = HttpUplink(f"{scheme}://127.0.0.1:{server.port}", timeout_s=5)
        try:
            with pytest.raises(RetryableUplinkError) as info:
                await up.send("telemetry", one_batch("tls-bad"))
        finally:
            await up.aclose()
        if scheme == "https":
            assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)

    asyncio.run(main())


def test_forwarder_drains_over_tls(tls_broker: tuple[Server, Path], tmp_path: Path) -> None:
    server, ca = tls_broker
    cfg = edge_config(tmp_path / "edge", url=f"https://127.0.0.1:{server.port}", ca_file=ca,
                      max_batch_records=500)
    store = open_edge(cfg)
    fill(store, 5000, 50)

    async def main() -> None:
        up = HttpUplink(cfg.uplink.url, ca_file=ca)
        fwd = Forwarder([StreamSender(store, cfg.edge_id, cfg.uplink)], up, cfg.uplink)
        try:
            await run_until(fwd, fwd.drained, timeout=60)
        finally:
            await up.aclose()

    asyncio.run(main())
    assert store.acked_offset == 4999
    server.stop()  # read the partitions back from the stopped broker's data dir
    try:
        view = read_cloud(server.log_path.parent / "broker" / "data")
        view.records = [r for r in view.records if r.source[2] == store.generation]
        verify_cloud(view, {("edge-1", "telemetry", store.generation): range(5000)})
    finally:
        server.start()
        store.log.close()
