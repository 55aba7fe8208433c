"""Admitting a fleet: N edges' first batches (new positions) against their second ones.

Run from the repository root::

    .venv/bin/python bench/ingest_admission.py                  # 1,000 and 3,000 edges
    .venv/bin/python bench/ingest_admission.py --edges 10000

Strategy: the broker's ingest core in this process (a PartitionStore of 8 real
partitions in a temp dir, the default group commit, the Ingestor with its periodic
checkpoint task), no HTTP. N edges send their first batch (3 readings, a new position
each) at once; then the same N edges send their second batch (known positions). A new
position is checkpointed before its first ack (G3 across a crash), a known one is not, so
the second round is the peer: what the same batches cost without admitting anyone. The
table gives wall time until every batch is acked, CPU, and the slowest ack; the ratio
first / second says what admission adds. Prints the load average; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cloud_broker.config import TopicConfig  # noqa: E402
from cloud_broker.ingest import Ingestor  # noqa: E402
from cloud_broker.storage import PartitionStore  # noqa: E402
from uplink import Ack, Batch, UplinkRecord  # noqa: E402


def batch(i: int, base: int) -> Batch:
    records = tuple(UplinkRecord(base + k, b"edge-%05d-%d" % (i, k), 1_700_000_000_000 + k,
                                 b'{"temp":21.5,"seq":%d}' % (base + k)) for k in range(3))
    return Batch(f"edge-{i:05d}", "telemetry", f"g{i:015d}", base, base + 2, records)


async def one_round(ingestor: Ingestor, edges: int, base: int) -> tuple[float, float, float]:
    """(wall s, CPU s, slowest ack s) of every edge's batch from ``base`` at once."""
    async def send(i: int) -> float:
        t = time.perf_counter()
        reply = await ingestor.ingest("telemetry", batch(i, base))
        if not isinstance(reply, Ack):
            raise RuntimeError(f"edge {i}: {reply}")
        return time.perf_counter() - t

    c0, t0 = time.process_time(), time.perf_counter()
    waits = await asyncio.gather(*(send(i) for i in range(edges)))
    return time.perf_counter() - t0, time.process_time() - c0, max(waits)


async def run(edges: int, work: Path) -> dict[str, float]:
    store = PartitionStore(work / f"data-{edges}")
    store.ensure_topic(TopicConfig("telemetry", 8))
    ingestor = Ingestor(store, work / f"data-{edges}")
    ingestor.recover()
    checkpoints = asyncio.create_task(ingestor.run_checkpoints())
    try:
        new = await one_round(ingestor, edges, 0)
        known = await one_round(ingestor, edges, 3)
    finally:
        checkpoints.cancel()
        store.close()
    return {"edges": edges, "new_wall": new[0], "new_cpu": new[1], "new_max": new[2],
            "known_wall": known[0], "known_cpu": known[1], "known_max": known[2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", default="1000,3000", help="fleet sizes, comma-separated")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="admission-"))
    try:
        rows = [asyncio.run(run(int(n), work)) for n in args.edges.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title="admitting a fleet: first batches (new positions) vs second (known)")
    for col in ("edges", "new: all acked s", "new: CPU s", "new: slowest ack s",
                "known: all acked s", "known: CPU s", "new / known (wall)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['edges']:,.0f}", f"{r['new_wall']:.2f}", f"{r['new_cpu']:.2f}",
                      f"{r['new_max']:.2f}", f"{r['known_wall']:.2f}",
                      f"{r['known_cpu']:.2f}", f"{r['new_wall'] / r['known_wall']:.1f}x")
    console = Console(width=140)
    console.print(table)
    console.print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
