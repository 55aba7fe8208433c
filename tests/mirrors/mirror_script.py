"""A mirror process for kill -9 tests: the mirrors of a cloud.toml, source read directly.

Usage: python tests/mirrors/mirror_script.py --config mirror.toml
           [--crash-after-writes K] [--exit-when-done]

The config's data_dir holds the source partitions (written by the test, no broker runs on
it) and mirrors.db. ``--crash-after-writes K`` SIGKILLs this process right after the K-th
successful target write, before its checkpoint: the worst moment for duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from cloud_broker.config import load_config
from cloud_broker.mirrors import LocalSource, MirrorManager
from cloud_broker.storage import PartitionStore


async def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = PartitionStore(cfg.data_dir)
    for t in cfg.topics.values():
        store.ensure_topic(t)
    manager = MirrorManager(cfg.data_dir, LocalSource(store), cfg.mirrors.values())
    await manager.start()
    if args.crash_after_writes:
        left = [args.crash_after_writes]
        for runner in manager.runners.values():
            write = runner.target.write

            async def crashing(p, records, write=write):  # type: ignore[no-untyped-def]
                await write(p, records)
                left[0] -= 1
                if left[0] <= 0:
                    os.kill(os.getpid(), signal.SIGKILL)

            runner.target.write = crashing  # type: ignore[method-assign]
    try:
        while True:
            await asyncio.sleep(0.1)
            if args.exit_when_done and all(
                    ps.position is not None and ps.position >= store.partition(
                        r.config.topic, ps.partition).log.end_offset
                    for r in manager.runners.values() for ps in r.partitions.values()
            ) and all(r.partitions for r in manager.runners.values()):
                return 0
    finally:
        await manager.stop()
        store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--crash-after-writes", type=int, default=0)
    parser.add_argument("--exit-when-done", action="store_true")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main(parser.parse_args())))
