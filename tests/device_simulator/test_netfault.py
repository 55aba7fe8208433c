"""The fault proxy: passes traffic, cuts responses after the server saw the request, and
refuses connections during an outage."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from device_simulator.netfault import FaultProxy
from tests.helpers import free_port, wait_for


class _Echo(socketserver.BaseRequestHandler):
    seen: list[bytes] = []

    def handle(self) -> None:
        while data := self.request.recv(65536):
            _Echo.seen.append(data)
            self.request.sendall(data.upper())


@pytest.fixture
def echo() -> Iterator[int]:
    _Echo.seen = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    p = FaultProxy(free_port(), "127.0.0.1", echo).start()
    yield p
    p.stop()


def _roundtrip(port: int, payload: bytes) -> bytes:
    """What came back; b"" when the proxy closed or reset the connection."""
    chunks = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            while len(chunks) < len(payload):
                data = s.recv(65536)
                if not data:
                    break
                chunks += data
    except ConnectionError:
        pass
    return chunks


def test_passes_traffic(proxy: FaultProxy) -> None:
    assert _roundtrip(proxy.listen[1], b"hello") == b"HELLO"
    wait_for(lambda: proxy.stats.bytes_down == 5, message="downstream bytes counted")
    assert proxy.stats.bytes_up == 5


def test_cut_response_reaches_server_but_not_client(proxy: FaultProxy) -> None:
    proxy.cut_next_responses(1)
    assert _roundtrip(proxy.listen[1], b"ping") == b""
    wait_for(lambda: b"ping" in _Echo.seen, message="server saw the request")
    assert proxy.stats.cut_responses == 1
    assert _roundtrip(proxy.listen[1], b"again") == b"AGAIN"


def test_outage_refuses_then_recovers(proxy: FaultProxy) -> None:
    proxy.down()
    assert _roundtrip(proxy.listen[1], b"lost") == b""
    assert proxy.stats.refused >= 1
    assert b"lost" not in _Echo.seen
    proxy.up()
    assert _roundtrip(proxy.listen[1], b"back") == b"BACK"


def test_random_faults_cut_every_response_when_certain(echo: int) -> None:
    from device_simulator.netfault import RandomFaults

    p = FaultProxy(0, "127.0.0.1", echo, chaos=RandomFaults(cut=1.0), seed=1).start()
    try:
        assert p.port != 0
        assert _roundtrip(p.port, b"hello") == b""
        wait_for(lambda: b"hello" in _Echo.seen, message="server saw the request")
        assert p.stats.cut_responses == 1
    finally:
        p.stop()


def test_random_faults_drop_requests_before_the_server_sees_them_whole(echo: int) -> None:
    from device_simulator.netfault import RandomFaults

    p = FaultProxy(0, "127.0.0.1", echo, chaos=RandomFaults(drop=1.0), seed=2).start()
    try:
        assert _roundtrip(p.port, b"0123456789") == b""
        wait_for(lambda: p.stats.drops == 1, message="a drop counted")
        assert b"0123456789" not in b"".join(_Echo.seen)
    finally:
        p.stop()
