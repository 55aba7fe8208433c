"""Edge generations (G3): a log whose continuity cannot be verified starts a new one.

A wiped data dir, segments without a generation file, or a generation file without
segments all mean a new random generation, so offsets restart without ever being reused
under the old position; the cloud keeps both generations' records side by side, told
apart by their ``origin`` headers.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from cloud_broker.config import TopicConfig
from cloud_broker.ingest import Ingestor
from cloud_broker.storage import PartitionStore
from edge_agent.config import EdgeConfig
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.streams import ACKED_FILE, GENERATION_FILE, StreamStore
from shared_log import write_checkpoint
from tests.helpers_uplink import (
    edge_config,
    fill,
    memory_uplink,
    open_edge,
    read_logs,
    run_until,
    verify_cloud,
)


class Cloud:
    def __init__(self, root: Path) -> None:
        self.store = PartitionStore(root)
        self.store.ensure_topic(TopicConfig("telemetry", 4))
        self.ingestor = Ingestor(self.store, root)
        self.ingestor.recover()

    def forward(self, cfg: EdgeConfig, store: StreamStore) -> None:
        async def main() -> None:
            fwd = Forwarder([StreamSender(store, cfg.edge_id, cfg.uplink)],
                            memory_uplink(self.ingestor), cfg.uplink)
            await run_until(fwd, fwd.drained)
        asyncio.run(main())

    def view(self):  # type: ignore[no-untyped-def]
        return read_logs({p.index: p.log for p in self.store.partitions("telemetry")})


def stream_dir(cfg: EdgeConfig) -> Path:
    return cfg.data_dir / "streams" / "telemetry"


def test_wiped_data_dir_is_a_new_generation_and_the_cloud_keeps_both(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", max_batch_records=250)
    cloud = Cloud(tmp_path / "cloud")
    first = open_edge(cfg)
    assert first.new_generation
    fill(first, 1000, 20)
    cloud.forward(cfg, first)
    first.log.close()

    shutil.rmtree(cfg.data_dir)  # a replaced disk
    second = open_edge(cfg)
    assert second.new_generation and second.generation != first.generation
    assert (second.log.start_offset, second.acked_offset) == (0, -1)
    fill(second, 800, 20, start=5000)  # same offsets 0..799, different readings
    cloud.forward(cfg, second)

    view = cloud.view()
    verify_cloud(view, {("edge-1", "telemetry", first.generation): range(1000),
                        ("edge-1", "telemetry", second.generation): range(800)})
    # offsets 0..799 exist under both generations, each with its own payload
    seqs = {(r.source[2], r.edge_offset): r.value for r in view.records}
    assert seqs[(first.generation, 5)] != seqs[(second.generation, 5)]
    assert b'"seq":5005' in seqs[(second.generation, 5)]
    assert cloud.ingestor.acked_offset(("edge-1", "telemetry", first.generation)) == 999
    assert cloud.ingestor.acked_offset(("edge-1", "telemetry", second.generation)) == 799
    second.log.close()
    cloud.store.close()


def test_restart_keeps_generation_and_acked_offset(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", max_batch_records=100)
    cloud = Cloud(tmp_path / "cloud")
    store = open_edge(cfg)
    fill(store, 300, 5)
    cloud.forward(cfg, store)
    store.persist_acked()
    store.log.close()
    again = open_edge(cfg)
    assert not again.new_generation and again.generation == store.generation
    assert again.acked_offset == 299
    fill(again, 100, 5, start=300)
    cloud.forward(cfg, again)
    verify_cloud(cloud.view(), {("edge-1", "telemetry", store.generation): range(400)})
    again.log.close()
    cloud.store.close()


def test_segments_without_a_generation_file_start_a_new_generation(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", max_batch_records=100)
    cloud = Cloud(tmp_path / "cloud")
    store = open_edge(cfg)
    fill(store, 300, 5)
    cloud.forward(cfg, store)
    store.persist_acked()
    store.log.close()
    (stream_dir(cfg) / GENERATION_FILE).unlink()

    again = open_edge(cfg)
    assert again.new_generation and again.generation != store.generation
    # the acked checkpoint belongs to the old generation: not trusted for the new one
    assert again.acked_offset == again.log.start_offset - 1
    assert (stream_dir(cfg) / GENERATION_FILE).read_text().strip() == again.generation
    cloud.forward(cfg, again)
    # the kept segments go again under the new position; nothing of the old is touched
    verify_cloud(cloud.view(), {("edge-1", "telemetry", store.generation): range(300),
                                ("edge-1", "telemetry", again.generation): range(300)})
    again.log.close()
    cloud.store.close()


def test_generation_file_without_segments_or_unreadable_is_replaced(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge")
    d = stream_dir(cfg)
    d.mkdir(parents=True)
    (d / GENERATION_FILE).write_text("0123456789abcdef\n")
    write_checkpoint(d / ACKED_FILE, {"generation": "0123456789abcdef", "offset": 41})
    store = open_edge(cfg)
    assert store.new_generation and store.generation != "0123456789abcdef"
    assert store.acked_offset == -1
    fill(store, 10, 2)
    store.log.close()

    (d / GENERATION_FILE).write_text("../../etc/passwd")  # not a generation id
    again = open_edge(cfg)
    assert again.new_generation and again.generation.isalnum()
    assert again.generation != store.generation
    again.log.close()
