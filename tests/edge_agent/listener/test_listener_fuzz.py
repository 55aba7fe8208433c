"""Hostile bytes against the listener: in process (every ``data_received`` survives, the
reader's buffer stays under max_packet_size, a bad packet closes the connection), and
against a running agent (a clean disconnect, and the listener keeps serving others)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from listener_testing import agent, listener_status, readings_of, write_config

from edge_agent.inbox import Inbox
from edge_agent.listener import Listener, ListenerConfig
from mqttproto import V5, V311, Connect, Disconnect, Pingreq, Publish, Will, encode
from tests.helpers import Server, find_binary, wait_for

MAX_PACKET = 2048


class FakeTransport:
    """What an asyncio transport gives a protocol, recording what is written."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.written = bytearray()
        self.closing = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.proto.connection_lost, None)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def _valid_stream(version: int) -> bytes:
    packets = [Connect(version, "fuzz-dev", clean_start=False, keepalive=30,
                       will=Will("devices/fuzz-dev/telemetry", b"{}", 1)),
               *(Publish("devices/fuzz-dev/telemetry", json.dumps({"seq": s}).encode(),
                         s % 2, packet_id=s if s % 2 else 0) for s in range(1, 6)),
               Pingreq(), Disconnect()]
    return b"".join(encode(p, version) for p in packets)


@st.composite
def hostile(draw: st.DrawFn) -> list[bytes]:
    """Random bytes, or a valid conversation with bytes flipped, cut, or inserted; then
    split into random chunks as TCP may deliver it."""
    kind = draw(st.sampled_from(["random", "mutated", "prefix"]))
    if kind == "random":
        data = draw(st.binary(max_size=3000))
    else:
        data = bytearray(_valid_stream(draw(st.sampled_from([V311, V5]))))
        if kind == "prefix":
            data = data[:draw(st.integers(0, len(data)))] + draw(st.binary(max_size=600))
        for _ in range(draw(st.integers(1, 6))):
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip":
                data[i] = draw(st.integers(0, 255))
            elif op == "cut":
                del data[i:i + draw(st.integers(1, 40))]
            else:
                data[i:i] = draw(st.binary(min_size=1, max_size=8))
        data = bytes(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(chunks=hostile())
def test_no_bytes_crash_a_connection(loop: asyncio.AbstractEventLoop, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture,
                                     chunks: list[bytes]) -> None:
    async def main() -> None:
        cfg = ListenerConfig(allow_anonymous=True, acl=("#",), max_packet_size=MAX_PACKET)
        inbox = Inbox()
        listener = Listener(cfg, tmp_path / "listener", lambda t: "s", {"s": inbox}, Inbox())
        listener.sessions.directory.mkdir(parents=True, exist_ok=True)
        writer = asyncio.ensure_future(listener.sessions.run())
        conn = listener._protocol()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            if transport.closing:
                break
            conn.data_received(chunk)
            assert conn.reader.buffered() <= MAX_PACKET
            await asyncio.sleep(0.001)  # the CONNECT check and the session write
        transport.close()
        await asyncio.sleep(0)
        assert not listener.conns, "a closed connection left behind"
        assert len(inbox) <= 6  # at most the five readings and the will of the conversation
        await listener.close()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    loop.run_until_complete(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # a connection task that raised is logged as an error


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int, int]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg, status_port, port = write_config(tmp, listener="allow_anonymous = true\n"
                                                        "connect_timeout_s = 1\n"
                                                        f"max_packet_size = {MAX_PACKET}")
    server = agent(cfg, status_port, port, tmp / "agent.log").start()
    try:
        yield server, status_port, port
    finally:
        server.stop()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chunks=hostile())
def test_hostile_bytes_against_a_running_listener(served: tuple[Server, int, int],
                                                  chunks: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", served[2]), timeout=2) as s:
        try:
            for c in chunks:
                s.sendall(c)
            s.settimeout(0.05)
            while s.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass


def test_the_listener_still_serves_after_the_fuzzing(served: tuple[Server, int, int]) -> None:
    server, status_port, port = served
    test_hostile_bytes_against_a_running_listener(served)  # run the property first
    assert server.running
    res = subprocess.run([find_binary("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port),
                          "-q", "1", "-i", "after", "-t", "devices/after/telemetry", "-m",
                          '{"seq": 1}'], capture_output=True, timeout=20)
    assert res.returncode == 0, res
    wait_for(lambda: readings_of(status_port, "after") == [1], 10, message="a reading")
    doc = listener_status(status_port)
    assert doc["malformed"] > 0
    wait_for(lambda: listener_status(status_port)["connections"] == 0, 10,
             message="every fuzzing socket to be closed")


def test_a_large_read_is_handled_a_slice_per_loop_turn(loop: asyncio.AbstractEventLoop,
                                                      tmp_path: Path) -> None:
    """256 KiB of small PUBLISHes in one read do not hold the event loop: each turn
    handles one slice, reading is paused meanwhile, and every reading arrives in order."""
    async def main() -> None:
        cfg = ListenerConfig(allow_anonymous=True, acl=("#",))
        inbox = Inbox()
        listener = Listener(cfg, tmp_path / "listener", lambda t: "s", {"s": inbox}, Inbox())
        conn = listener._protocol()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(encode(Connect(V311, "bulk"), V311))
        for _ in range(50):
            if conn.state == 2:  # connected
                break
            await asyncio.sleep(0.01)
        frames = b"".join(encode(Publish("devices/bulk/telemetry", b"%d" % i), V311)
                          for i in range(10_000))
        assert len(frames) > 256 * 1024
        conn.data_received(frames)
        first = len(inbox)
        assert 0 < first < 1000 and transport.paused  # one slice, then the loop's turn
        for _ in range(200):
            if len(inbox) == 10_000:
                break
            await asyncio.sleep(0)
        assert [m[1] for m in inbox.messages] == [b"%d" % i for i in range(10_000)]
        assert not transport.paused  # reading resumed once the backlog was handled
        transport.close()
        await asyncio.sleep(0)
        await listener.close()

    loop.run_until_complete(main())
