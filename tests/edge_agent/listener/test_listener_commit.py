"""The listener's commit rule, in process: the real pipeline, log and group commit behind
connections on fake transports.

When every connection that has published at QoS 1 waits for a PUBACK, the listener has
the commit start at once instead of at the end of ``commit_interval_ms`` (here 10
minutes, so any PUBACK that comes back soon came from a hurried commit, or from the
first fsync after a quiet spell). Every PUBACK written is checked against the log at the
moment of the write: its reading must already be durable (the PUBACK never precedes the
fsync that covers it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from test_listener_fuzz import FakeTransport

from edge_agent.config import parse_config
from edge_agent.deadletter import DeadLetterLog
from edge_agent.dedup import HighWaterMarks
from edge_agent.inbox import Inbox
from edge_agent.ingest import StreamIngest
from edge_agent.listener import Listener, ListenerConfig
from edge_agent.payload import PayloadRules
from edge_agent.streams import StreamStore, open_stream
from mqttproto import V311, Connect, Publish, encode
from tests.helpers import until

SPACING_MS = 600_000.0  # the commit spacing: only a hurry (or a quiet spell) commits


class Device(FakeTransport):
    """A fake transport that checks each PUBACK against the log when it is written."""

    def __init__(self, proto: Any, store: StreamStore, name: str,
                 sent: dict[int, int]) -> None:
        super().__init__(proto)
        self.store, self.name, self.sent = store, name, sent
        self.acked: list[int] = []  # sequence numbers PUBACKed, in order
        self.early: list[int] = []  # PUBACKed before their reading was durable

    def write(self, data: bytes) -> None:
        super().write(data)
        durable = durable_seqs(self.store).get(self.name, set())
        for i in range(0, len(data), 4):
            if data[i] != 0x40:
                continue  # the CONNACK
            seq = self.sent[int.from_bytes(data[i + 2:i + 4], "big")]
            self.acked.append(seq)
            if seq not in durable:
                self.early.append(seq)


def durable_seqs(store: StreamStore) -> dict[str, set[int]]:
    """Device -> the sequence numbers below the log's durable offset."""
    out: dict[str, set[int]] = {}
    lg = store.log
    if lg.durable_offset > lg.start_offset:
        for r in lg.read(lg.start_offset, max_records=100_000, max_bytes=1 << 26):
            if r.offset < lg.durable_offset:
                out.setdefault(r.key.decode(), set()).add(int(dict(r.headers)["seq"]))
    return out


async def with_pipeline(tmp: Path, body: Callable[[Listener, StreamStore], Awaitable[None]]
                        ) -> None:
    cfg = parse_config({"edge_id": "e1", "data_dir": str(tmp),
                        "ingest": {"commit_interval_ms": SPACING_MS},
                        "streams": [{"name": "t", "topics": ["devices/+/telemetry"],
                                     "device_key": "topic:devices/{device}/telemetry"}]})
    sc = cfg.streams[0]
    store = open_stream(cfg, sc)
    rules = PayloadRules(payload=sc.payload, device_key=sc.device_key,
                         require_sequence=True, max_payload_bytes=1000)
    deadletters = DeadLetterLog(tmp, 1 << 20, 256, SPACING_MS)
    inbox, unmatched = Inbox(), Inbox()
    listener = Listener(ListenerConfig(allow_anonymous=True), tmp / "listener",
                        lambda t: "t", {"t": inbox}, unmatched)
    listener.sessions.directory.mkdir(parents=True, exist_ok=True)
    ingest = StreamIngest("t", store, rules, HighWaterMarks(), deadletters, lambda t: "t",
                          inbox=inbox, ack=listener.ack)
    other = StreamIngest("", None, None, None, deadletters, lambda t: "t", inbox=unmatched,
                         ack=listener.ack)
    tasks = [asyncio.ensure_future(t) for t in (ingest.run(), other.run(),
                                                listener.sessions.run())]
    try:
        await body(listener, store)
    finally:
        await listener.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        store.log.close()
        deadletters.close()


async def connect(listener: Listener, store: StreamStore, name: str) -> tuple[Any, Device]:
    conn = listener._protocol()
    sent: dict[int, int] = {}
    device = Device(conn, store, name, sent)
    conn.connection_made(device)  # type: ignore[arg-type]
    conn.data_received(encode(Connect(V311, name), V311))
    await until(lambda: conn.state == 2, 10, f"{name} connected")
    return conn, device


def publish(conn: Any, device: Device, seqs: range) -> None:
    """QoS 1 readings ``seqs`` in one read, packet id = seq + 1."""
    frames = []
    for seq in seqs:
        device.sent[seq + 1] = seq
        frames.append(encode(Publish(f"devices/{device.name}/telemetry",
                                     json.dumps({"seq": seq}).encode(), 1,
                                     packet_id=seq + 1), V311))
    conn.data_received(b"".join(frames))


def test_closed_loop_publishers_are_not_held_by_the_commit_spacing(tmp_path: Path) -> None:
    """Three devices that send a window of 4 and wait for its PUBACKs, 6 rounds: with a
    10-minute spacing only hurried commits can answer after the first, and every PUBACK
    is for a reading the log had already made durable."""
    async def body(listener: Listener, store: StreamStore) -> None:
        devices = [await connect(listener, store, f"d{i}") for i in range(3)]
        for r in range(6):
            for conn, dev in devices:
                publish(conn, dev, range(4 * r, 4 * r + 4))
            await until(lambda r=r: all(len(d.acked) == 4 * r + 4 for _, d in devices), 10,
                        f"round {r}'s PUBACKs")
        for _, dev in devices:
            assert dev.acked == list(range(24))
            assert dev.early == [], f"PUBACKs before their fsync: {dev.early}"
        assert durable_seqs(store) == {d.name: set(range(24)) for _, d in devices}
        assert listener.stats.hurries >= 6
        assert store.log.hurried_commits >= 5  # every round after the first
        assert listener.waiting == 0 and listener.publishers == 3

    asyncio.run(with_pipeline(tmp_path, body))


def test_a_publisher_with_nothing_in_flight_keeps_the_spacing(tmp_path: Path) -> None:
    """While a connected publisher has nothing waiting (it may send any moment) another's
    reading waits for the spacing; once that publisher leaves, everyone left waits for a
    PUBACK and the commit starts at once."""
    async def body(listener: Listener, store: StreamStore) -> None:
        (a, da), (b, db) = [await connect(listener, store, n) for n in ("a", "b")]
        publish(a, da, range(1))  # alone and after a quiet spell: committed at once
        await until(lambda: da.acked == [0], 10, "a's PUBACK")
        hurries = listener.stats.hurries
        publish(b, db, range(1))  # a has nothing in flight: no hurry
        assert listener.stats.hurries == hurries
        await asyncio.sleep(0.3)
        assert db.acked == [] and store.log.durable_offset == 1  # held by the spacing
        da.close()  # a goes: b is the only publisher left, and it waits
        await until(lambda: db.acked == [0], 10, "b's PUBACK after a left")
        assert listener.stats.hurries == hurries + 1
        assert db.early == [] and da.early == []

    asyncio.run(with_pipeline(tmp_path, body))
