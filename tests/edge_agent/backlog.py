"""An edge holding a backlog, an in-process cloud, and a forwarder run between them.

Strategy: the tests of the forwarder's retries and of its encoding all start from the
same place (stored readings in one or more streams, a cloud that ingests in process)
and end with the same verdict (every reading in the cloud exactly once, in order), and
differ only in the uplink they put between the two: a wrapper of ``uplink()`` that
fails, records or watches. ``Backlog`` is that shared set-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.streams import StreamStore
from edge_agent.uplink_http import MemoryUplink
from tests.edge_agent.test_forwarder import Cloud, source
from tests.helpers_uplink import (
    edge_config,
    fill,
    memory_uplink,
    open_edge,
    run_until,
    stream_config,
    verify_cloud,
)


class Backlog:
    """``counts`` readings stored per stream (from ``devices`` devices), a cloud with 4
    partitions per stream; ``priorities`` per stream name (default 5); the rest of the
    keywords go to the uplink config (``edge_config``)."""

    def __init__(self, root: Path, counts: dict[str, int], *, devices: int = 20,
                 priorities: dict[str, int] | None = None, **uplink: object) -> None:
        prio = priorities or {}
        self.counts = counts
        self.cfg = edge_config(root / "edge", [stream_config(n, priority=prio.get(n, 5))
                                               for n in counts], **uplink)
        self.stores: dict[str, StreamStore] = {n: open_edge(self.cfg, n) for n in counts}
        for name, count in counts.items():
            fill(self.stores[name], count, devices)
        self.cloud = Cloud(root / "cloud", dict.fromkeys(counts, 4))
        self.senders = [StreamSender(s, self.cfg.edge_id, self.cfg.uplink)
                        for s in self.stores.values()]

    def uplink(self) -> MemoryUplink:
        """The uplink straight into the cloud's ingestor."""
        return memory_uplink(self.cloud.ingestor)

    async def forward(self, uplink: Any, timeout: float = 30.0) -> None:
        """Run a forwarder over ``uplink`` until every stream is drained."""
        fwd = Forwarder(self.senders, uplink, self.cfg.uplink)
        await run_until(fwd, fwd.drained, timeout=timeout)

    def verify_and_close(self) -> None:
        """Every stored reading is in the cloud exactly once, in order; then close."""
        try:
            for name, count in self.counts.items():
                store = self.stores[name]
                verify_cloud(self.cloud.view(name), {source(self.cfg, store): range(count)})
        finally:
            self.cloud.close()
            for store in self.stores.values():
                store.log.close()
