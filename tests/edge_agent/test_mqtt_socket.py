"""The read-buffering socket under paho (edge_agent/mqtt_socket.py) and the adapter's drain.

Unit part: a socketpair, bytes split across and merged into recv calls, short reads from
the buffer, BlockingIOError and EOF only once the buffer is empty, delegation.
Integration part: ``MqttSession`` in-process against a real Mosquitto (MQTT 5, 3.1.1 and
TLS): every reading arrives in order through a ``BufferedSocket`` even when each drain
stops after one packet with more bytes buffered (no readable event for those), and the
PUBACKs sent through the wrapper reach the broker (nothing is redelivered).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_agent import mqtt_ingest
from edge_agent.config import MqttConfig
from edge_agent.mqtt_ingest import MqttSession
from edge_agent.mqtt_socket import RECV_BYTES, BufferedSocket, BufferingClient, is_buffered
from tests.helpers import Server, find_binary, free_port


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, BufferedSocket]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        yield a, BufferedSocket(b)
    finally:
        a.close()
        b.close()


def test_recv_serves_small_reads_from_one_socket_read(pair: Any) -> None:
    writer, bs = pair
    writer.sendall(b"\x30\x05hello\x30\x03abc")  # two packets in one socket read
    assert bs.recv(1) == b"\x30"
    assert bs.buffered() == 11 and bs.pending() == 11
    writer.sendall(b"XYZ")  # in the kernel, behind the buffered bytes
    assert bs.recv(1) == b"\x05"
    assert bs.recv(5) == b"hello"
    assert bs.recv(1) == b"\x30"
    assert bs.recv(1) == b"\x03"
    assert bs.recv(10) == b"abc"  # a short read: the buffer first, the socket not touched
    assert bs.buffered() == 0 and bs.pending() == 0
    assert bs.recv(10) == b"XYZ"  # then the socket


def test_fill_says_whether_it_took_all_the_kernel_had(pair: Any) -> None:
    # A read shorter than asked for found the kernel's queue empty: the drain stops there
    # instead of reading again only to get EAGAIN (the fd stays readable if more came).
    writer, bs = pair
    writer.sendall(b"\x30\x03abc")
    assert bs.fill() == 5 and bs.drained
    writer.sendall(b"x" * (RECV_BYTES + 10))
    assert bs.fill() == RECV_BYTES and not bs.drained  # more may be waiting
    assert bs.recv(RECV_BYTES) == b"x" * RECV_BYTES
    assert bs.fill() == 10 and bs.drained


def test_recv_when_a_packet_is_split_across_socket_reads(pair: Any) -> None:
    writer, bs = pair
    writer.sendall(b"\x30\x0ahel")
    assert bs.recv(1) == b"\x30"
    assert bs.recv(1) == b"\x0a"
    assert bs.recv(10) == b"hel"
    with pytest.raises(BlockingIOError):
        bs.recv(7)
    writer.sendall(b"lo worl")
    assert bs.recv(7) == b"lo worl"
    assert bs.buffered() == 0


def test_empty_buffer_and_socket_raise_blocking_io_error(pair: Any) -> None:
    _writer, bs = pair
    with pytest.raises(BlockingIOError):
        bs.recv(1)
    assert bs.pending() == 0


def test_eof_only_after_the_buffered_bytes(pair: Any) -> None:
    writer, bs = pair
    writer.sendall(b"ab")
    writer.shutdown(socket.SHUT_WR)
    assert bs.recv(1) == b"a"
    assert bs.recv(1) == b"b"
    assert bs.recv(1) == b""
    assert bs.recv(1) == b""


def test_large_reads_and_exact_fits(pair: Any) -> None:
    writer, bs = pair
    big = os.urandom(RECV_BYTES * 3)
    writer.setblocking(False)
    sent = writer.send(big)
    got = b""
    while len(got) < sent:
        got += bs.recv(RECV_BYTES * 2)
    assert got == big[:sent] and bs.buffered() == 0
    writer.sendall(b"12345678")
    assert bs.recv(4) == b"1234"
    assert bs.recv(4) == b"5678"
    with pytest.raises(BlockingIOError):
        bs.recv(4)


def test_everything_else_is_delegated(pair: Any) -> None:
    _writer, bs = pair
    raw = bs.sock
    assert bs.fileno() == raw.fileno()
    assert bs.getsockname() == raw.getsockname()
    bs.settimeout(0.0)
    assert bs.gettimeout() == 0.0
    assert bs.send(b"x") == 1
    assert "BufferedSocket" in repr(bs)
    bs.close()
    assert raw.fileno() == -1 and bs.fileno() == -1


# -- MqttSession through the wrapper, against a real Mosquitto -----------------------------

def _session(cfg: MqttConfig, client_id: str, publish: Any, expect: int,
             qos: int) -> tuple[list[tuple[str, bytes, int, int, int]], bool]:
    """Run a session until ``expect`` messages arrived (``publish`` runs in a thread once
    it is subscribed), acking the QoS 1 ones as they come; return what arrived and
    whether it read through a BufferedSocket."""
    got: list[tuple[str, bytes, int, int, int]] = []

    async def main() -> bool:
        session = MqttSession(cfg, client_id, [("t/+/r", qos)], got.append)
        acked = 0

        async def wait(cond: Any, what: str, timeout: float = 20.0) -> None:
            nonlocal acked
            deadline = time.monotonic() + timeout
            while not cond():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {what} ({len(got)} messages)")
                # ack as they come: MQTT 5 sends only receive_maximum unacknowledged ones
                acks = [(m[3], m[4]) for m in got[acked:] if m[2]]
                acked = len(got)
                assert session.ack(acks) == len(acks)
                await asyncio.sleep(0.01)

        task = asyncio.create_task(session.run())
        try:
            await wait(lambda: session.subscribed, "the subscription")
            buffered = session._client is not None and is_buffered(session._client)
            await asyncio.to_thread(publish)
            await wait(lambda: len(got) >= expect, f"{expect} messages")
            await wait(lambda: acked == len(got), "the last acks")
            await asyncio.sleep(0.2)  # nothing more than expected
            return buffered
        finally:
            await session.close()
            task.cancel()  # run() returns after close(), or is cancelled in a backoff
            await asyncio.gather(task, return_exceptions=True)

    return got, asyncio.run(main())


def _publish(port: int, n: int, qos: int, tls_ca: Path | None = None) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if tls_ca is not None:
        c.tls_set(ca_certs=str(tls_ca))
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(f"t/d{i % 3}/r", b"%d:" % i + b"x" * (i % 300), qos)
                 for i in range(n)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def _check(got: list[tuple[str, bytes, int, int, int]], n: int, qos: int) -> None:
    assert len(got) == n
    assert [int(m[1].split(b":")[0]) for m in got] == list(range(n))  # in order, once
    assert all(m[0] == f"t/d{i % 3}/r" and m[2] == qos for i, m in enumerate(got))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("qos", [0, 1])
def test_session_drains_buffered_bytes_without_a_readable_event(
        tmp_path: Path, mosquitto: Server, monkeypatch: pytest.MonkeyPatch, protocol: str,
        qos: int) -> None:
    # One packet per drain: every drain stops with more packets already in the buffer,
    # which no epoll event will announce; the adapter must schedule the next drain itself.
    monkeypatch.setattr(mqtt_ingest, "_DRAIN_PACKETS", 1)
    cfg = MqttConfig(port=mosquitto.port, keepalive_s=60, protocol=protocol,
                     reconnect_max_s=0.5)
    n = 3000
    cid = f"sub-{protocol}-{qos}"
    got, buffered = _session(cfg, cid, lambda: _publish(mosquitto.port, n, qos), n, qos)
    assert buffered, "paho no longer calls Client._create_socket: see edge_agent/mqtt_socket.py"
    _check(got, n, qos)
    if qos:  # the PUBACKs went out through the wrapper: the session holds nothing more
        again, _ = _session(cfg, cid, lambda: None, 0, qos)
        assert again == []


def _tls_mosquitto(tmp: Path) -> tuple[Server, Path]:
    openssl = find_binary("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=tmp, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=test-ca", "-keyout", "ca.key",
        "-out", "ca.crt")
    run("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    port = free_port()
    (tmp / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"cafile {tmp / 'ca.crt'}\ncertfile {tmp / 'server.crt'}\n"
        f"keyfile {tmp / 'server.key'}\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        "log_type error\n" + ("user root\n" if os.geteuid() == 0 else ""))
    server = Server([find_binary("mosquitto"), "-c", str(tmp / "mosquitto.conf")], port,
                    tmp / "mosquitto.out")
    return server, tmp / "ca.crt"


@pytest.mark.parametrize("qos", [0, 1])
def test_session_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qos: int) -> None:
    monkeypatch.setattr(mqtt_ingest, "_DRAIN_PACKETS", 1)
    server, ca = _tls_mosquitto(tmp_path)
    server.start()
    try:
        cfg = MqttConfig(port=server.port, keepalive_s=60, tls_ca=ca, reconnect_max_s=0.5)
        n = 2000
        got, buffered = _session(cfg, f"tls-{qos}", lambda: _publish(server.port, n, qos, ca),
                                 n, qos)
        assert buffered
        _check(got, n, qos)
    finally:
        server.kill()


def test_buffering_client_wraps_the_tls_socket(tmp_path: Path) -> None:
    server, ca = _tls_mosquitto(tmp_path)
    server.start()
    try:
        c = BufferingClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        c.connect("127.0.0.1", server.port)
        try:
            sock = c.socket()
            assert isinstance(sock, BufferedSocket) and isinstance(sock.sock, ssl.SSLSocket)
            assert sock.getpeercert()["subject"]  # TLS methods are delegated
            assert sock.pending() == 0
        finally:
            c.disconnect()
            sock.close()
    finally:
        server.kill()
