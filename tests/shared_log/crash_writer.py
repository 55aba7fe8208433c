"""A writer process for the kill -9 tests (run as a script, never imported by pytest).

    python crash_writer.py DIRECTORY MODE SEGMENT_BYTES SEED

Appends batches of records derived from their offsets (shared_log_testing.record_for)
and prints each batch's last offset on its own line, flushed, once the log says it is
durable: after append() with every_batch, after wait_durable_async() with group (from
many concurrent tasks, as the edge agent does). It starts at the log's end offset, so a
test can run it again after a kill and the records stay a function of their offsets.
"""

from __future__ import annotations

import asyncio
import random
import sys

# Python puts this script's directory on sys.path, and the test puts the repo on PYTHONPATH.
from shared_log_testing import batch_for

from shared_log import CommitMode, CommitPolicy, Log, LogConfig, append_durable


def config(mode: str, segment_bytes: int) -> LogConfig:
    return LogConfig(
        segment_bytes=segment_bytes,
        index_interval_bytes=512,
        commit=CommitPolicy(CommitMode(mode), interval_ms=1),
    )


def report(last: int) -> None:
    sys.stdout.write(f"{last}\n")
    sys.stdout.flush()


def run_every_batch(log: Log, rng: random.Random) -> None:
    while True:
        _, last = log.append(batch_for(log.end_offset, rng.randint(1, 8)))
        report(last)


async def run_group(log: Log, rng: random.Random, tasks: int = 16) -> None:
    async def worker() -> None:
        while True:
            # No await between reading end_offset and appending: the loop runs one task
            # at a time, so the offsets the records were built for are the ones assigned.
            _, last = await append_durable(log, batch_for(log.end_offset, rng.randint(1, 8)))
            report(last)

    await asyncio.gather(*(worker() for _ in range(tasks)))


def main() -> None:
    directory, mode, segment_bytes, seed = sys.argv[1:5]
    log = Log(directory, config(mode, int(segment_bytes)))
    rng = random.Random(int(seed))
    if log.config.commit.mode is CommitMode.GROUP:
        asyncio.run(run_group(log, rng))
    else:
        run_every_batch(log, rng)


if __name__ == "__main__":
    main()
