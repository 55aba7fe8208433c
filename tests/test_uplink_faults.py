"""G3 under real faults: every edge record reaches the cloud exactly once, in device order.

Three failure sources, each against a real ``cloud-broker serve`` subprocess:

a. a loopback proxy (device_simulator.netfault) between forwarder and broker that drops
   requests half-way, cuts responses after the broker processed the request, and delays
   traffic past the client's timeout;
b. kill -9 of the broker mid-stream, restarted on the same port and data dir (its ingest
   state checkpoint is then stale, so the edge is refused and must rewind);
c. kill -9 of a forwarder process (tests/edge_agent/forwarder_runner.py) at random
   moments over a prefilled edge log (its acked checkpoint is then stale).

The verdict always comes from the data: after the broker stopped, its partitions are read
back read-only and every (edge, stream, generation, offset) must be there exactly once,
every device in one partition, in increasing order (tests/helpers_uplink.verify_cloud).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from device_simulator.netfault import FaultProxy, RandomFaults
from edge_agent.config import load_config
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.streams import ACKED_FILE, open_stream
from edge_agent.uplink_http import HttpUplink
from shared_log import read_checkpoint
from tests.helpers import broker_server, wait_for
from tests.helpers_uplink import (
    edge_config,
    fill,
    open_edge,
    read_cloud,
    run_forwarder_cmd,
    run_until,
    stream_config,
    subprocess_env,
    verify_cloud,
    write_edge_toml,
)

pytestmark = pytest.mark.slow

DEVICES = 100


def test_exactly_once_through_drops_cuts_and_delays(tmp_path: Path) -> None:
    broker = broker_server(tmp_path / "broker").start()
    faults = RandomFaults(drop=0.02, cut=0.08, delay=0.05, max_delay_s=0.1,
                          long_delay=0.15, long_delay_s=1.5)
    proxy = FaultProxy(0, "127.0.0.1", broker.port, chaos=faults, seed=20240601).start()
    cfg = edge_config(tmp_path / "edge", [stream_config("telemetry"),
                                          stream_config("alarms", priority=0,
                                                        cloud_topic="telemetry")],
                      url=f"http://127.0.0.1:{proxy.port}", max_batch_records=400,
                      max_in_flight=4, timeout_s=1.0)
    telemetry, alarms = open_edge(cfg, "telemetry"), open_edge(cfg, "alarms")
    fill(telemetry, 20_000, DEVICES)
    fill(alarms, 2_000, 10)
    senders = [StreamSender(s, cfg.edge_id, cfg.uplink) for s in (telemetry, alarms)]

    async def main() -> None:
        up = HttpUplink(cfg.uplink.url, timeout_s=cfg.uplink.timeout_s)
        fwd = Forwarder(senders, up, cfg.uplink)

        def enough() -> bool:
            if not fwd.drained():
                return False
            stats = proxy.stats
            if stats.cut_responses >= 20 and stats.drops >= 5 and stats.delays >= 5:
                return True
            fill(telemetry, 2000, DEVICES, start=telemetry.log.end_offset)  # more traffic
            fwd.notify()
            return False

        try:
            await run_until(fwd, enough, timeout=150)
        finally:
            await up.aclose()

    try:
        asyncio.run(main())
    finally:
        proxy.stop()
        broker.stop()
    assert sum(s.stats.retries for s in senders) >= 20
    verify_cloud(read_cloud(tmp_path / "broker" / "data"), {
        ("edge-1", "telemetry", telemetry.generation): range(telemetry.log.end_offset),
        ("edge-1", "alarms", alarms.generation): range(2000),
    })
    telemetry.log.close()
    alarms.log.close()


def test_exactly_once_across_broker_kill9(tmp_path: Path) -> None:
    broker = broker_server(tmp_path / "broker").start()
    cfg = edge_config(tmp_path / "edge", url=f"http://127.0.0.1:{broker.port}",
                      max_batch_records=500, timeout_s=3.0)
    store = open_edge(cfg)
    fill(store, 5000, DEVICES)
    rng = random.Random(7)
    kills = 0

    async def main() -> None:
        nonlocal kills
        up = HttpUplink(cfg.uplink.url, timeout_s=cfg.uplink.timeout_s)
        sender = StreamSender(store, cfg.edge_id, cfg.uplink)
        fwd = Forwarder([sender], up, cfg.uplink)
        task = asyncio.create_task(fwd.run(persist_interval_s=0.1))
        try:
            for _ in range(10):
                fill(store, 4000, DEVICES, start=store.log.end_offset)
                fwd.notify()
                # mid-stream: some of the new data is acked, the rest is not
                target = store.acked_offset + rng.randrange(300, 3000)
                deadline = time.monotonic() + 60
                while store.acked_offset < target:
                    assert time.monotonic() < deadline, "no progress after a broker restart"
                    assert not task.done(), task
                    await asyncio.sleep(0.005)
                assert not fwd.drained()
                await asyncio.to_thread(broker.kill)
                kills += 1
                await asyncio.to_thread(broker.start)
            deadline = time.monotonic() + 60
            while not fwd.drained():
                assert time.monotonic() < deadline, "did not drain after the last restart"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await up.aclose()

    try:
        asyncio.run(main())
    finally:
        broker.stop()
    assert kills == 10
    verify_cloud(read_cloud(tmp_path / "broker" / "data"),
                 {("edge-1", "telemetry", store.generation): range(store.log.end_offset)})
    store.log.close()


def test_exactly_once_across_forwarder_kill9(tmp_path: Path) -> None:
    broker = broker_server(tmp_path / "broker").start()
    url = f"http://127.0.0.1:{broker.port}"
    edge_dir = tmp_path / "edge"
    toml = tmp_path / "edge.toml"
    # throttled, so that ten kills land before the backlog is gone
    write_edge_toml(toml, edge_dir, url, extra_uplink=(
        'compression = "none"\nmax_batch_records = 500\nbandwidth_bytes_per_s = 250000\n'))
    cfg = load_config(toml)
    store = open_stream(cfg, cfg.stream("telemetry"))
    fill(store, 50_000, 200, size=100)
    generation = store.generation
    store.log.close()
    acked_path = edge_dir / "streams" / "telemetry" / ACKED_FILE

    def acked() -> int:
        return read_checkpoint(acked_path, {}).get("offset", -1)

    rng = random.Random(11)
    log = open(tmp_path / "runner.out", "ab")  # noqa: SIM115 - closed below
    try:
        for i in range(10):
            before = acked()
            proc = subprocess.Popen(run_forwarder_cmd(toml), stdout=log,
                                    stderr=subprocess.STDOUT, env=subprocess_env(),
                                    start_new_session=True)
            try:
                if i % 3 == 2:  # any moment, start-up included
                    time.sleep(rng.uniform(0.05, 0.8))
                else:  # once it made progress, a moment later
                    wait_for(lambda: acked() > before or proc.poll() is not None,  # noqa: B023
                             timeout=60, message="forwarder progress")
                    time.sleep(rng.uniform(0, 0.3))
                assert proc.poll() is None, "the forwarder finished before it was killed"
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        assert acked() < 49_999
        write_edge_toml(toml, edge_dir, url, extra_uplink="max_batch_records = 2000\n")
        final = subprocess.run(run_forwarder_cmd(toml), stdout=log, stderr=subprocess.STDOUT,
                               env=subprocess_env(), timeout=120, check=False)
        assert final.returncode == 0, (tmp_path / "runner.out").read_text()[-3000:]
    finally:
        log.close()
        broker.stop()
    assert acked() == 49_999
    verify_cloud(read_cloud(tmp_path / "broker" / "data"),
                 {("edge-1", "telemetry", generation): range(50_000)})
