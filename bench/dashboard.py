"""What one poll of the broker dashboard costs the event loop, at the endpoint's bounds.

    .venv/bin/python bench/dashboard.py            # 200 topics x 10 partitions, 10,000 edges
    .venv/bin/python bench/dashboard.py --quick    # 20 topics

Strategy: a real ``Broker`` in a temp dir with every bound of ``GET /v1/dashboard``
reached (200 topics of 10 partitions = 2,000 partitions, 200 consumer groups with
committed offsets, 10,000 remembered edge streams of which 500 are shown), then the
snapshot is built in process, as the handler does, for a token that sees everything and
for one scoped to one topic, and JSON-encoded. The peer, same run and same broker: one
Prometheus scrape (``generate_latest`` of the broker's registry), which a monitoring
system does every 15 s; the dashboard asks once a second per open page. Target: a full
poll (build + encode) at most 20 ms of event-loop time, so an open page can never hold
other requests up noticeably; the ratio to the scrape says how it compares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plot import plot_rows
from prometheus_client import generate_latest

from cloud_broker.auth import ANONYMOUS, Principal
from cloud_broker.broker import Broker
from cloud_broker.config import parse_config
from cloud_broker.http.dashboard import snapshot

TARGET_MS = 20.0


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` calls, in milliseconds (the machine is shared: best is steadiest)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    topics = 20 if args.quick else 200
    with tempfile.TemporaryDirectory() as work:
        cfg = parse_config({"data_dir": work, "max_topics": topics,
                            "topics": {f"t{i}": {"partitions": 10} for i in range(topics)},
                            "auth": {"required": False}})
        broker = Broker(cfg)
        for i in range(10_000):
            broker.edges.acked(f"gw-{i}", "telemetry", f"t{i % topics}", "g1", i, 1)

        async def commit_groups() -> None:
            for g in range(200):
                await broker.groups.commit(f"g{g}", None, None,
                                           [(f"t{g % topics}", p, 0) for p in range(10)])

        asyncio.run(commit_groups())
        scoped = Principal("*", frozenset({"read"}), ("t1",), ("g1",))
        rows = []
        scrape = timed(lambda: generate_latest(broker.metrics.registry), args.repeat)
        for who, principal in (("all topics", ANONYMOUS), ("one topic", scoped)):
            doc = snapshot(broker, principal, time.time())
            build = timed(lambda p=principal: snapshot(broker, p, time.time()), args.repeat)
            encode = timed(lambda d=doc: json.dumps(d), args.repeat)
            rows.append((f"dashboard poll, token for {who}", build, encode, build + encode,
                         len(json.dumps(doc)) / 1e6, (build + encode) / scrape))
        rows.append(("peer: one Prometheus scrape", scrape, 0.0, scrape,
                     len(generate_latest(broker.metrics.registry)) / 1e6, 1.0))
        broker.groups.close()
        broker.store.close()
    head = ("path", "build ms", "encode ms", "total ms", "MB", "vs scrape")
    print(f"{topics * 10:,} partitions, 200 groups, 10,000 edges remembered; best of "
          f"{args.repeat}; load average {os.getloadavg()[0]:.1f}\n")
    print("| " + " | ".join(head) + " |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, build, encode, total, mb, ratio in rows:
        print(f"| {name} | {build:.2f} | {encode:.2f} | {total:.2f} | {mb:.2f} | {ratio:.2f}x |")
    worst = max(r[3] for r in rows[:2])
    print(f"\nworst dashboard poll {worst:.1f} ms (target <= {TARGET_MS:.0f} ms: "
          f"{'met' if worst <= TARGET_MS else 'MISSED'})")
    plot_rows("dashboard", head, [r[:5] for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
