"""The listener's per-reading work, stage by stage, as instruction counts (callgrind).

Run from the repository root::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.rx \\
        .venv/bin/python bench/listener_stages.py --stage rx
    # then --stage prepare, append, ack; "Collected" / readings = instructions per reading
    .venv/bin/python bench/listener_stages.py --stage all   # CPU time instead (noisy)

Strategy: CPU time per reading on a loaded machine moves with the load (batch sizes,
caches, preemption), so comparing two builds needs a measure the load cannot move. This
runs the real listener, pipeline and log in one process on fake transports (no sockets,
no uplink): ``--devices`` connections each send one ``device-sim``-shaped QoS 1 PUBLISH,
then the four stages run one after the other on that batch, and only ``--stage`` is
counted (callgrind's instrumentation is switched on around it with
``callgrind_control``):

* ``rx``: ``Connection.data_received`` per reading, up to the stream's inbox;
* ``prepare``: the pipeline's per-reading half (``prepare.Preparer._prepare``);
* ``append``: ``Log.append`` of the batch (framing, CRC, write to the page cache);
* ``ack``: ``Listener.ack`` after the commit (settle, PUBACK bytes, the transport write).

A first round warms every cache (topics, devices, marks); the second is measured. The
garbage collector is tuned as the agent tunes it (``cli.tune_gc``). Not counted: the
event loop and the kernel (socket reads and PUBACK writes: see ``perf`` in
docs/benchmarks.md), the fsync, the uplink. Not a test: prints, asserts only that every
reading was stored and acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from inspect import signature
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.cli import tune_gc  # noqa: E402
from edge_agent.config import parse_config  # noqa: E402
from edge_agent.deadletter import DeadLetterLog  # noqa: E402
from edge_agent.dedup import HighWaterMarks  # noqa: E402
from edge_agent.inbox import Inbox  # noqa: E402
from edge_agent.ingest import StreamIngest  # noqa: E402
from edge_agent.listener import Listener, ListenerConfig  # noqa: E402
from edge_agent.payload import PayloadRules  # noqa: E402
from edge_agent.routing import Router  # noqa: E402
from edge_agent.streams import open_stream  # noqa: E402
from mqttproto import V311, Connect, Publish, encode  # noqa: E402

STAGES = ("rx", "prepare", "append", "ack")


class Transport:
    """What a connection needs of an asyncio transport; counts the PUBACK bytes."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def instrument(on: bool) -> None:
    """Switch callgrind's counting on or off (nothing outside valgrind)."""
    if os.environ.get("VALGRIND_LAUNCHER") or "vgpreload" in os.environ.get("LD_PRELOAD", ""):
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                       capture_output=True, check=False)


def reading(device: str, seq: int) -> bytes:
    """A QoS 1 PUBLISH shaped like ``device-sim``'s telemetry (MQTT 3.1.1)."""
    payload = json.dumps({"device": device, "seq": seq, "ts": 1_765_000_000_000 + seq * 200,
                          "kind": "env", "temperature": 21.53, "humidity": 40.21,
                          "pressure": 1013.2}, separators=(",", ":")).encode()
    return encode(Publish(f"devices/{device}/telemetry", payload, 1, packet_id=seq), V311)


async def run(tmp: Path, devices: int, stage: str) -> dict[str, float]:
    cfg = parse_config({"edge_id": "bench", "data_dir": str(tmp),
                        "streams": [{"name": "t", "topics": ["devices/+/telemetry"],
                                     "device_key": "topic:devices/{device}/telemetry"}]})
    sc, ing = cfg.streams[0], cfg.ingest
    store = open_stream(cfg, sc)
    rules = PayloadRules(payload=sc.payload, device_key=sc.device_key,
                         sequence_field=ing.sequence_field, timestamp_field=ing.timestamp_field,
                         epoch_field=ing.epoch_field, require_sequence=sc.require_sequence,
                         max_payload_bytes=ing.max_payload_bytes)
    deadletters = DeadLetterLog(tmp, 1 << 20, 256, 10.0)
    route = Router([("t", ("devices/+/telemetry",))])
    inbox = Inbox()
    listener = Listener(ListenerConfig(allow_anonymous=True), tmp / "listener", route,
                        {"t": inbox}, Inbox())
    listener.sessions.directory.mkdir(parents=True)
    # routed: the listener routes before the inbox (a build without the flag: route again)
    routed = {"routed": True} if "routed" in signature(StreamIngest).parameters else {}
    pipeline = StreamIngest("t", store, rules, HighWaterMarks(), deadletters, route,
                            inbox=inbox, ack=listener.ack, **routed)
    sessions = asyncio.ensure_future(listener.sessions.run())
    conns = []
    for d in range(devices):
        conn = listener._protocol()
        conn.connection_made(Transport())  # type: ignore[arg-type]
        conn.data_received(encode(Connect(V311, f"dev-{d:05d}"), V311))
        conns.append(conn)
    while any(c.state != 2 for c in conns):  # CONNECTs are checked off the loop
        await asyncio.sleep(0.01)
    tune_gc()
    cpu: dict[str, float] = {}
    for seq in (1, 2):  # 1 warms every cache; 2 is measured
        frames = [reading(f"dev-{d:05d}", seq) for d in range(devices)]
        count = {name: seq == 2 and stage in (name, "all") for name in STAGES}
        timed(cpu, "rx", count["rx"], receive, conns, frames)
        msgs = inbox.take(devices)
        p = timed(cpu, "prepare", count["prepare"], pipeline._prepare, msgs)
        timed(cpu, "append", count["append"], store.log.append, p.records)
        store.log.flush()
        timed(cpu, "ack", count["ack"], listener.ack, p.acks)
        assert len(p.records) == devices and len(p.acks) == devices
    assert listener.stats.pubacks == 2 * devices
    sessions.cancel()
    await asyncio.gather(sessions, return_exceptions=True)
    store.log.close()
    deadletters.close()
    return {name: sec / devices * 1e6 for name, sec in cpu.items()}


def receive(conns: list[Any], frames: list[bytes]) -> None:
    for conn, frame in zip(conns, frames, strict=True):
        conn.data_received(frame)


def timed(cpu: dict[str, float], name: str, counted: bool, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, its CPU seconds in ``cpu[name]``; counted by callgrind if ``counted``."""
    if counted:
        instrument(True)
    t0 = time.process_time()
    out = fn(*args)
    cpu[name] = time.process_time() - t0
    if counted:
        instrument(False)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    ap.add_argument("--devices", type=int, default=1000)
    args = ap.parse_args()
    import uvloop
    tmp = Path(tempfile.mkdtemp(prefix="listener-stages-"))
    try:
        cpu = uvloop.run(run(tmp, args.devices, args.stage))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.devices} readings, stage {args.stage} counted; CPU us/reading (noisy): "
          + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
