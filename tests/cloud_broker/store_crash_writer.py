"""The writer process of the store crash test (run as a script, SIGKILLed by the test).

    python store_crash_writer.py IMPLEMENTATION DATA_DIR

Opens the store, and appends framed batches of 1..8 records to the partitions of topic
``t`` in turn, each record carrying the broker's ``origin`` header last with an edge
offset one above the previous record's. Once a batch is durable it prints
``partition last_offset edge_offset_of_last`` on its own line, flushed.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from store_conformance import PARTITIONS, TOPIC, framed  # this script's directory
from store_impls import by_name

from cloud_broker.config import TopicConfig


async def main(impl_name: str, data_dir: Path) -> None:
    store = by_name(impl_name).open(data_dir)
    parts = store.ensure_topic(TopicConfig(TOPIC, PARTITIONS, segment_bytes=4096))
    rng = random.Random(7)
    edge = 0
    while True:
        for part in parts:
            n = rng.randint(1, 8)
            rows = [(b"k%d" % (edge + i), b"v%d" % (edge + i), edge + i,
                     [("origin", b"e/s/g/%d" % (edge + i))]) for i in range(n)]
            _first, last = part.append_framed(*framed(rows))
            await part.wait_durable(last)
            edge += n
            sys.stdout.write(f"{part.index} {last} {edge - 1}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
