"""ingest.StreamIngest without MQTT: ack only after durable, batching, dedup, back-pressure.

The MQTT side is replaced by calling ``submit`` and recording what ``ack`` is given; the
log, its group commit and the dead-letter log are the real ones.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge_agent.config import EdgeConfig, parse_config
from edge_agent.deadletter import DeadLetterLog
from edge_agent.dedup import HighWaterMarks
from edge_agent.ingest import StreamIngest
from edge_agent.payload import PayloadRules
from edge_agent.streams import StreamStore, open_stream
from shared_log import Log


def config(tmp: Path, **stream: object) -> EdgeConfig:
    s = {"name": "telemetry", "topics": ["devices/+/telemetry"],
         "device_key": "topic:devices/{device}/telemetry", **stream}
    return parse_config({"edge_id": "e1", "data_dir": str(tmp),
                         "ingest": {"commit_interval_ms": 30.0}, "streams": [s]})


def pipeline(tmp: Path, cfg: EdgeConfig, **kw: object) -> tuple[StreamIngest, StreamStore]:
    sc = cfg.streams[0]
    store = open_stream(cfg, sc)
    rules = PayloadRules(payload=sc.payload, device_key=sc.device_key,
                         require_sequence=sc.require_sequence, max_payload_bytes=1000)
    dl = DeadLetterLog(tmp, 1 << 20, 256, 5.0)
    ing = StreamIngest(sc.name, store, rules, HighWaterMarks(), dl, lambda t: sc.name,
                       **kw)  # type: ignore[arg-type]
    return ing, store


def msg(device: str, seq: int, mid: int, qos: int = 1) -> tuple[str, bytes, int, int, int]:
    return (f"devices/{device}/telemetry", json.dumps({"seq": seq}).encode(), qos, mid, 1)


def test_pubacks_wait_for_the_group_commit(tmp_path: Path) -> None:
    async def main() -> None:
        ing, store = pipeline(tmp_path, config(tmp_path))
        seen: list[tuple[int, int]] = []  # (mid, durable offset when acked)

        def ack(acks: list[tuple[int, int]]) -> None:
            seen.extend((mid, store.log.durable_offset) for mid, _ in acks)

        ing.ack = ack
        task = asyncio.create_task(ing.run())
        for i in range(500):
            ing.submit(msg("d1", i, i + 1))
            if i % 50 == 0:
                await asyncio.sleep(0.005)
        while len(seen) < 500:
            await asyncio.sleep(0.01)
        task.cancel()
        # mid i+1 is the reading at offset i: it was durable (offset < durable end) when acked
        assert [m for m, _ in seen] == list(range(1, 501))
        assert all(durable > mid - 1 for mid, durable in seen)
        assert ing.stats.batches < 500  # many readings per shared_log batch
        store.log.close()

    asyncio.run(main())


def test_redeliveries_are_deduplicated_but_still_acked(tmp_path: Path) -> None:
    async def main() -> None:
        ing, store = pipeline(tmp_path, config(tmp_path))
        acked: list[int] = []
        ing.ack = lambda acks: acked.extend(m for m, _ in acks)
        task = asyncio.create_task(ing.run())
        for i in range(10):
            ing.submit(msg("d1", i, i + 1))
        for i in range(5, 12):  # a redelivery of 5..9 (DUP or not), then new 10, 11
            ing.submit(msg("d1", i, 100 + i))
        while len(acked) < 17:
            await asyncio.sleep(0.01)
        task.cancel()
        assert ing.stats.deduplicated == 5
        assert store.log.end_offset == 12
        store.log.close()

    asyncio.run(main())


def test_reject_new_holds_qos1_and_drops_qos0_until_room(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_bytes=8192, segment_bytes=4096, full_policy="reject_new")

    async def main() -> None:
        ing, store = pipeline(tmp_path, cfg, retry_s=0.05)
        acked: list[int] = []
        ing.ack = lambda acks: acked.extend(m for m, _ in acks)
        task = asyncio.create_task(ing.run())
        n = 0
        while not ing.stats.write_error:
            ing.submit(msg("d1", n, n + 1))
            n += 1
            await asyncio.sleep(0)
        ing.submit(msg("d1", 10_000, 60_000, qos=0))  # best effort: dropped while blocked
        await asyncio.sleep(0.2)
        held_end = store.log.end_offset
        assert len(acked) <= held_end and ing.stats.held > 0
        assert ing.stats.dropped["full"] >= 1
        # the cloud acknowledges everything: segments are freed, the held readings go in
        store.note_acked(store.log.end_offset - 1)
        while len(acked) < n:
            await asyncio.sleep(0.02)
        task.cancel()
        assert ing.stats.write_error == ""
        assert sorted(acked) == list(range(1, n + 1))
        store.log.close()
        with Log(tmp_path / "streams" / "telemetry", read_only=True) as lg:
            assert lg.end_offset == n  # every QoS 1 reading stored once, none lost

    asyncio.run(main())


def test_bad_input_is_dead_lettered_and_acked(tmp_path: Path) -> None:
    cfg = config(tmp_path, require_sequence=True)

    async def main() -> None:
        ing, store = pipeline(tmp_path, cfg)
        acked: list[int] = []
        ing.ack = lambda acks: acked.extend(m for m, _ in acks)
        task = asyncio.create_task(ing.run())
        ing.submit(("devices/d1/telemetry", b"{bad", 1, 1, 1))
        ing.submit(("devices/..x/telemetry", b'{"seq": 1}', 1, 2, 1))
        ing.submit(("devices/d1/telemetry", b"x" * 2000, 1, 3, 1))
        ing.submit(("devices/d1/telemetry", b"{}", 0, 0, 1))
        ing.submit(msg("d1", 1, 4))
        while len(acked) < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        assert acked == [1, 2, 3, 4]
        assert ing.deadletters.by_reason() == {"malformed": 1, "bad_device": 1, "oversized": 1,
                                               "missing_sequence": 1}
        assert store.log.end_offset == 1
        ing.deadletters.close()
        store.log.close()

    asyncio.run(main())
