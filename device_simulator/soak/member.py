"""A consumer-group member of the soak, run as its own process (SIGKILLed by the schedule).

Usage: python -m device_simulator.soak.member URL GROUP OUT_FILE [--token T]

Reads both cloud topics in group GROUP and appends one line per record to OUT_FILE:

    topic partition offset record_ts_ms received_ms device boot seq device_ts_ms

(``-`` for fields an undecodable value lacks). Each line is written (one ``os.write``)
before the next record is asked for, so before the commit that covers it: a SIGKILL
loses only records that were not committed, which are handed out again. The file may
hold an offset twice (the consumer's at-least-once contract), never miss one; the
verdict reads each (topic, partition, offset) once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from cloud_broker.client import Consumer

from ..payloads import BOOT_FIELD, DEVICE_FIELD, SEQ_FIELD, TS_FIELD, decode

COMMIT_INTERVAL_MS = 500


def line(rec: object, received_ms: int) -> str:
    msg = decode(rec.value)  # type: ignore[attr-defined]
    head = (f"{rec.topic} {rec.partition} {rec.offset} "  # type: ignore[attr-defined]
            f"{rec.timestamp} {received_ms}")  # type: ignore[attr-defined]
    if msg is None or not isinstance(msg.get(DEVICE_FIELD), str):
        key = rec.key.decode(errors="replace").replace(" ", "_") or "-"  # type: ignore[attr-defined]
        return f"{head} {key} - - -\n"
    return (f"{head} {msg[DEVICE_FIELD]} {msg.get(BOOT_FIELD, 0)} {msg.get(SEQ_FIELD, '-')} "
            f"{msg.get(TS_FIELD, '-')}\n")


async def consume(url: str, group: str, out: str, token: str | None) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # auto-commit covers the records handed out *before* the current one: each line is
    # written before the next record is asked for, so nothing committed is unwritten.
    consumer = Consumer(url, group=group, topics=["telemetry", "alarms"], token=token,
                        auto_commit=True, auto_commit_interval_ms=COMMIT_INTERVAL_MS,
                        session_timeout_ms=3000, wait_ms=500, max_records=2000,
                        retry_for_s=3600)
    async for rec in consumer:
        os.write(fd, line(rec, int(time.time() * 1000)).encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("group")
    ap.add_argument("out")
    ap.add_argument("--token")
    args = ap.parse_args()
    asyncio.run(consume(args.url, args.group, args.out, args.token))


if __name__ == "__main__":
    main()
