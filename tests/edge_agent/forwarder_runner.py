"""Run the Forwarder over HttpUplink for an edge.toml until every stream is drained.

Strategy: the fault tests need the forwarder as a real process they can SIGKILL at any
instant, so this is the smallest possible agent: open the stream stores (which picks the
generation and the stored acked offset), run ``Forwarder`` with ``HttpUplink``, wait for
``drained()``, persist the acked offsets and exit 0. Usage::

    python tests/edge_agent/forwarder_runner.py edge.toml [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from edge_agent.config import load_config
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.ratelimit import TokenBucket
from edge_agent.streams import open_stream
from edge_agent.uplink_http import HttpUplink


async def drain(path: str, timeout: float) -> int:
    cfg = load_config(path)
    stores = [open_stream(cfg, s) for s in cfg.streams]
    u = cfg.uplink
    bucket = TokenBucket(u.bandwidth_bytes_per_s) if u.bandwidth_bytes_per_s else None
    uplink = HttpUplink(u.url, u.token, timeout_s=u.timeout_s,
                        ca_file=u.ca_file, max_connections=u.max_in_flight, bandwidth=bucket)
    senders = [StreamSender(st, cfg.edge_id, u) for st in stores]
    fwd = Forwarder(senders, uplink, u)
    task = asyncio.create_task(fwd.run(persist_interval_s=0.2))
    deadline = time.monotonic() + timeout
    try:
        while not fwd.drained():
            if task.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await uplink.aclose()
        for st in stores:
            st.log.close()
    print(json.dumps({s.name: {"acked": s.store.acked_offset, "batches": s.stats.batches_sent,
                               "retries": s.stats.retries, "refusals": s.stats.refusals,
                               "stopped": s.stopped} for s in senders}))
    return 0 if fwd.drained() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    return asyncio.run(drain(args.config, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
