"""A group member for test_consumer_groups.py, run as its own process (killed with -9).

Usage: group_consumer_proc.py URL GROUP OUT_FILE (--commit-every N | --auto-commit-ms N)
       [--delay-ms D] [--session-ms S]

Appends JSON lines to OUT_FILE, one write per line (a SIGKILL loses no written line):
``{"ev": "assign", "gen", "parts"}`` when the assignment changes, ``{"ev": "rec", "p",
"o"}`` per processed record (``t``: when it was handed out), ``{"ev": "commit",
"offsets": {p: o}}`` after a commit the broker accepted; each with ``t`` (time.time()).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from cloud_broker.client import Consumer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("group")
    ap.add_argument("out")
    ap.add_argument("--commit-every", type=int, default=0)
    ap.add_argument("--auto-commit-ms", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=1.0)
    ap.add_argument("--session-ms", type=int, default=2000)
    args = ap.parse_args()
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def emit(**event: object) -> None:
        event.setdefault("t", time.time())
        os.write(fd, (json.dumps(event) + "\n").encode())

    async def run() -> None:
        consumer = Consumer(args.url, group=args.group, topics=["telemetry"],
                            auto_commit=args.auto_commit_ms > 0,
                            auto_commit_interval_ms=args.auto_commit_ms or 1000,
                            session_timeout_ms=args.session_ms, wait_ms=500, max_records=50)
        seen_gen, seen_commit = None, {}
        n = 0
        async for r in consumer:
            if consumer.generation != seen_gen:  # joined again: offsets read, not committed
                seen_gen, seen_commit = consumer.generation, consumer.committed
                emit(ev="assign", gen=seen_gen, parts=sorted(p for _, p in consumer.assignment))
            received = time.time()
            await asyncio.sleep(args.delay_ms / 1000)  # the "work"
            emit(ev="rec", p=r.partition, o=r.offset, t=received)
            n += 1
            if args.commit_every and n % args.commit_every == 0:
                await consumer.commit()
            committed = consumer.committed
            if committed != seen_commit:
                changed = {p: o for (_, p), o in committed.items() if seen_commit.get(
                    ("telemetry", p)) != o}
                seen_commit = committed
                emit(ev="commit", offsets=changed)

    asyncio.run(run())


if __name__ == "__main__":
    main()
