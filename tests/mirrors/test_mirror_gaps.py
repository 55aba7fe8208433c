"""Records the source no longer has: counted as lost, never faked, never silently skipped
by a target that promises offsets. And the replication endpoint's refusals.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cbor2
import httpx
import pytest
from mirror_testing import ADMIN, TOPIC, BrokerKit, SqlKit, fill_source, source_rows

from cloud_broker.config import TopicConfig
from cloud_broker.mirrors import LocalSource, MirrorManager
from cloud_broker.storage import PartitionStore

pytestmark = pytest.mark.timeout(120)


def small_segments(data_dir: Path) -> PartitionStore:
    store = PartitionStore(data_dir)
    store.ensure_topic(TopicConfig(TOPIC, 1, segment_bytes=4096))
    return store


async def mirror_once(data_dir: Path, store: PartitionStore, kit, until) -> dict:  # type: ignore[no-untyped-def]
    manager = MirrorManager(data_dir, LocalSource(store),
                            [kit.config(wait_ms=50, max_backoff_s=0.2, timeout_s=2)])
    await manager.start()
    try:
        async def wait() -> None:
            while not until(manager.status()[0]):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(wait(), 30)
        return manager.status()[0]
    finally:
        await manager.stop()


@pytest.mark.parametrize("kind", ["broker", "sql"])
def test_source_retention_before_the_mirror_started(kind: str, tmp_path: Path) -> None:
    kit = BrokerKit(tmp_path) if kind == "broker" else SqlKit(tmp_path)
    try:
        store = small_segments(tmp_path / "source")
        fill_source(store, 600, batch=20)
        log = store.partition(TOPIC, 0).log
        deleted = log.delete_before(300)
        assert deleted > 0 and log.start_offset == deleted
        status = asyncio.run(mirror_once(tmp_path / "source", store, kit,
                                         lambda s: s["partitions"] and s["lag"] == 0))
        store.close()
        assert status["partitions"][0]["records_lost"] == deleted
        want = source_rows(tmp_path / "source", 0)
        assert want[0][0] == deleted
        assert kit.read(0) == want
        if kind == "broker":  # the target partition starts where the source does
            r = httpx.get(f"{kit.url}/v1/replicate/{TOPIC}/0",
                          headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.json() == {"start_offset": deleted, "end_offset": 600}
    finally:
        kit.close()


def corrupt_second_segment(data_dir: Path) -> None:
    pdir = data_dir / "topics" / TOPIC / "0"
    seg = sorted(p for p in pdir.iterdir() if p.suffix == ".log")[1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["broker", "sql"])
def test_corrupt_source_range(kind: str, tmp_path: Path) -> None:
    kit = BrokerKit(tmp_path) if kind == "broker" else SqlKit(tmp_path)
    try:
        store = small_segments(tmp_path / "source")
        fill_source(store, 400, batch=20)
        store.close()
        corrupt_second_segment(tmp_path / "source")
        store = small_segments(tmp_path / "source")
        want = source_rows(tmp_path / "source", 0)
        offsets = [r[0] for r in want]
        gap = next(i for i, o in enumerate(offsets) if o != i)
        assert gap > 0 and len(want) < 400
        if kind == "sql":  # a table has no offsets to keep: copy the rest, count the loss
            status = asyncio.run(mirror_once(tmp_path / "source", store, kit,
                                             lambda s: s["partitions"] and s["lag"] == 0))
            assert kit.read(0) == want
            assert status["partitions"][0]["records_lost"] == 400 - len(want)
        else:  # a broker keeps offsets: it stops at the gap and says so
            status = asyncio.run(mirror_once(
                tmp_path / "source", store, kit,
                lambda s: s["partitions"] and s["partitions"][0]["state"] == "stalled"))
            p0 = status["partitions"][0]
            assert "cannot leave a gap" in p0["last_error"]
            assert p0["position"] == gap and p0["lag"] > 0
            assert kit.read(0) == want[:gap]
        store.close()
    finally:
        kit.close()


def test_replicate_endpoint_refusals(tmp_path: Path) -> None:
    kit = BrokerKit(tmp_path)
    try:
        url = f"{kit.url}/v1/replicate/{TOPIC}/1"
        admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/cbor"}

        def body(first: int, n: int = 2) -> bytes:
            return cbor2.dumps({"records": [[o, b"k", b"v%d" % o, 5, [["h", b"x"]]]
                                            for o in range(first, first + n)]})

        assert httpx.post(url, content=body(0), headers=admin).json() == {"end_offset": 2}
        r = httpx.post(url, content=body(0), headers=admin)  # a replay
        assert r.status_code == 409 and r.json()["end_offset"] == 2
        r = httpx.post(url, content=body(5), headers=admin)  # a gap in a non-empty partition
        assert r.status_code == 409 and r.json()["end_offset"] == 2
        r = httpx.post(url, content=b"\xff\x00", headers=admin)
        assert r.status_code == 400
        bad = cbor2.dumps({"records": [[2, b"k", b"v", 1, []], [4, b"k", b"v", 1, []]]})
        r = httpx.post(url, content=bad, headers=admin)
        assert r.status_code == 400 and "consecutive" in r.json()["error"]
        assert httpx.post(url, content=body(2)).status_code == 401
        r = httpx.get(f"{kit.url}/v1/replicate/{TOPIC}/9", headers=admin)
        assert r.status_code == 404
        assert httpx.get(url, headers=admin).json() == {"start_offset": 0, "end_offset": 2}
    finally:
        kit.close()
