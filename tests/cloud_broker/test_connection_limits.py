"""Connection limits of a real ``cloud-broker serve``: idle and slowloris sockets cannot
lock clients out, are closed within ``limits.header_timeout_s``, and the broker's open
files return to where they were; long-poll and SSE consumers are not cut.

On main, 1,000 idle sockets stayed open forever (uvicorn times out only keep-alive
connections that already had a response).
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, broker_server, wait_for

IDLE_SOCKETS = 1000


@pytest.fixture(autouse=True)
def _enough_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_SOCKETS + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def start(tmp: Path, limits: str) -> Server:
    return broker_server(tmp, topics={"telemetry": 1}, extra=f"[limits]\n{limits}\n").start()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(port: int, reason: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    line = f'broker_http_connections_closed_total{{reason="{reason}"}} '
    return next(float(x[len(line):]) for x in text.splitlines() if x.startswith(line))


@contextlib.contextmanager
def idle_sockets(port: int, n: int, partial_every: int = 2) -> Iterator[list[socket.socket]]:
    """``n`` connected sockets; every ``partial_every``-th sends half a request header."""
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % partial_every == 0:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_peer(socks: list[socket.socket], timeout: float) -> int:
    """Wait until the server closed each socket (EOF or reset); how many it closed."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(sock)
                open_ -= 1
    sel.close()
    return len(socks) - open_


def test_idle_connections_are_evicted_for_new_clients(tmp_path: Path) -> None:
    """With the cap below the idle sockets and a long header timeout, a new client is still
    served at once: the oldest idle connections make room."""
    server = start(tmp_path / "b", "max_connections = 200\nheader_timeout_s = 60")
    try:
        with idle_sockets(server.port, IDLE_SOCKETS) as socks:
            r = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
            assert r.status_code == 200
            assert metric(server.port, "evicted_idle") >= IDLE_SOCKETS - 200
            # Those evicted are really closed (the header timeout is far away).
            assert closed_by_peer(socks, timeout=10) >= IDLE_SOCKETS - 200
    finally:
        server.stop()


def test_idle_and_slowloris_sockets_time_out_and_fds_return(tmp_path: Path) -> None:
    server = start(tmp_path / "b", "header_timeout_s = 1.5")
    port = server.port
    assert server.proc is not None
    pid = server.proc.pid
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200)
        baseline = fd_count(pid)

        # A long-poll consumer waits longer than the header timeout: it is not cut.
        poll: dict[str, object] = {}

        def long_poll() -> None:
            t0 = time.monotonic()
            resp = httpx.get(f"{base}/v1/topics/telemetry/partitions/0/records",
                             params={"offset": 0, "wait_ms": 4000}, timeout=15)
            poll.update(status=resp.status_code, waited=time.monotonic() - t0)

        consumer = threading.Thread(target=long_poll)
        consumer.start()
        with httpx.stream("GET", f"{base}/v1/topics/telemetry/partitions/0/stream",
                          params={"offset": 0, "keepalive_ms": 500}, timeout=15) as sse, \
                idle_sockets(port, IDLE_SOCKETS) as socks:
            assert sse.status_code == 200
            # New clients are served while the idle sockets are still open.
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert closed_by_peer(socks, timeout=15) == IDLE_SOCKETS
            # (the cap of 1000 evicted a few to admit the consumers and the health check)
            closed = metric(port, "header_timeout") + metric(port, "evicted_idle")
            assert closed >= IDLE_SOCKETS
            # The SSE stream, open since before, still delivers (keep-alive comments).
            lines = sse.iter_lines()
            assert next(lines) is not None
        consumer.join(20)
        assert poll.get("status") == 200 and float(poll["waited"]) >= 3.5  # type: ignore[arg-type]
        wait_for(lambda: fd_count(pid) <= baseline, timeout=15,
                 message=f"broker fds back to {baseline}")
    finally:
        server.stop()


def test_oversized_request_headers_get_431(tmp_path: Path) -> None:
    server = start(tmp_path / "b", "max_header_bytes = 4096")
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/healthz",
                      headers={"X-Big": "a" * 8000}, timeout=5)
        assert r.status_code == 431 and r.json()["field"] == "headers"
        ok = httpx.get(f"http://127.0.0.1:{server.port}/healthz",
                       headers={"X-Fine": "a" * 2000}, timeout=5)
        assert ok.status_code == 200
    finally:
        server.stop()


def test_header_deadline_covers_dribbling_and_later_requests(tmp_path: Path) -> None:
    """The deadline is for the whole header, not per read: a byte every 0.3 s does not keep
    a connection open; and it applies again to the next request on a kept-alive
    connection (uvicorn's keep-alive timer stops at the first byte of that request)."""
    server = start(tmp_path / "b", "header_timeout_s = 1.5\nkeep_alive_s = 30")
    try:
        dribbler = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        kept = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request stalls
        t0 = time.monotonic()
        dribbler.setblocking(False)
        header = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100
        closed_at = None
        for byte in header:
            try:
                dribbler.send(bytes([byte]))
                if dribbler.recv(1) == b"":
                    closed_at = time.monotonic() - t0
                    break
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.3)
        assert closed_at is not None and closed_at < 10, "dribbling kept the connection open"
        assert closed_by_peer([kept], timeout=10) == 1
        assert metric(server.port, "header_timeout") == 2
    finally:
        server.stop()


def test_busy_connections_are_never_evicted_a_new_one_gets_503(tmp_path: Path) -> None:
    """Three long polls and a kept-alive client fill a cap of 4: a fifth connection gets
    503 + Retry-After, and no long poll is cut."""
    server = start(tmp_path / "b", "max_connections = 4\nheader_timeout_s = 1")
    base = f"http://127.0.0.1:{server.port}"
    request = (b"GET /v1/topics/telemetry/partitions/0/records?offset=0&wait_ms=3000 "
               b"HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    polls = [socket.create_connection(("127.0.0.1", server.port), timeout=15)
             for _ in range(3)]
    try:
        for s in polls:
            s.sendall(request)
        with httpx.Client(base_url=base, timeout=5) as watcher:  # keeps its connection
            wait_for(lambda: "broker_http_connections 4.0" in watcher.get("/metrics").text,
                     timeout=5, message="three polls and the watcher connected")
            r = httpx.get(f"{base}/healthz", timeout=5)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            for s in polls:  # each poll waits its 3 s and answers 200
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
            assert "refused_full" in watcher.get("/metrics").text
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert metric(server.port, "refused_full") >= 1
    finally:
        for s in polls:
            s.close()
        server.stop()
