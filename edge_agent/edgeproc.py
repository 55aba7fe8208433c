"""The agent's edge processing: derived streams, their senders and transform runners.

Strategy: kept out of agent.py so the agent's wiring stays one page. ``open`` opens every
derived stream's storage (``streams/<name>/``, its own generation and acked offset, as
for any stream); ``senders`` gives the forwarder what it must send (raw streams with
``forward = true`` and every derived stream); ``spawn`` starts one runner per stream
with transforms, woken by that stream's durability waiter; ``stop`` writes a last
checkpoint. The local-consumer reader serves every stream by offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .config import EdgeConfig, StreamConfig
from .local_read import LocalReader
from .status import stream_problems
from .stream_sender import StreamSender
from .streams import StreamStore, open_stream
from .supervisor import Supervisor
from .transforms import TransformRunner

log = logging.getLogger(__name__)


def derived_streams(cfg: EdgeConfig) -> list[tuple[StreamConfig, str]]:
    """Every derived stream as its own StreamConfig, with the raw stream it comes from:
    the main output of each stream with transforms, then each route's target."""
    out: dict[str, tuple[StreamConfig, str]] = {}
    for s in cfg.streams:
        if not s.transforms:
            continue
        base = dict(topics=(), payload=s.payload, segment_bytes=s.segment_bytes,
                    max_bytes=s.max_bytes, full_policy=s.full_policy, device_key=s.device_key)
        prio = s.priority if s.derived_priority is None else s.derived_priority
        out.setdefault(s.derived, (StreamConfig(name=s.derived, priority=prio,
                                                cloud_topic=s.derived_cloud_topic, **base),
                                   s.name))
        for t in s.transforms:
            if t.kind == "route" and t.to not in out:
                p = s.priority if t.priority is None else t.priority
                out[t.to] = (StreamConfig(name=t.to, priority=p, cloud_topic=t.cloud_topic,
                                          **base), s.name)
    return list(out.values())


class EdgeProcessing:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.derived: dict[str, StreamStore] = {}
        self.senders: dict[str, StreamSender] = {}
        self.runners: list[TransformRunner] = []
        self.wakes: dict[str, asyncio.Event] = {}
        self.reader = LocalReader()

    def open(self) -> None:
        for sc, _raw in derived_streams(self.config):
            self.derived[sc.name] = open_stream(self.config, sc)

    def make_senders(self, raw: list[StreamStore]) -> tuple[list[StreamSender],
                                                            list[StreamSender]]:
        """(one sender per raw store, in order; the senders the forwarder runs)."""
        cfg = self.config
        raws = [StreamSender(st, cfg.edge_id, cfg.uplink) for st in raw]
        for name, st in self.derived.items():
            self.senders[name] = StreamSender(st, cfg.edge_id, cfg.uplink)
        forwarded = [s for s in raws if s.store.config.forward]
        return raws, forwarded + list(self.senders.values())

    def on_raw_durable(self, store: StreamStore, notify: Callable[[], None]
                       ) -> Callable[[], None]:
        """The raw stream's durability callback: forwarder, runner and local readers."""
        bell = self.reader.add(store.config.name, store.log)
        wake = self.wakes[store.config.name] = asyncio.Event()

        def durable() -> None:
            notify()
            wake.set()
            bell.ring()
        return durable

    def spawn(self, raw: list[StreamStore], sup: Supervisor, notify: Callable[[], None]) -> None:
        bells = {n: self.reader.add(n, st.log) for n, st in self.derived.items()}
        for st in raw:
            sc = st.config
            if not sc.transforms:
                continue
            outputs = {d.name: self.derived[d.name]
                       for d, src in derived_streams(self.config) if src == sc.name}
            runner = TransformRunner(st, sc.transforms, sc.derived, outputs,
                                     timestamp_field=self.config.ingest.timestamp_field,
                                     forward_raw=sc.forward)
            self.runners.append(runner)
            mine = [bells[n] for n in outputs]

            def on_output(mine: list[Any] = mine) -> None:
                notify()
                for b in mine:
                    b.ring()
            wake = self.wakes.setdefault(sc.name, asyncio.Event())
            sup.spawn(f"transform-{sc.name}",
                      lambda r=runner, w=wake, o=on_output: r.run(w, o))

    def stop(self) -> None:
        for r in self.runners:
            with contextlib.suppress(Exception):
                r.checkpoint_now()

    def close(self) -> None:
        for st in self.derived.values():
            st.log.close()

    def status(self) -> dict[str, Any]:
        derived = []
        for name, st in self.derived.items():
            s = self.senders.get(name)
            ss = s.stats if s else None
            derived.append({
                "name": name, "priority": st.config.priority, "cloud_topic": st.config.topic,
                "generation": st.generation, "start_offset": st.log.start_offset,
                "end_offset": st.log.end_offset, "acked_offset": st.acked_offset,
                "backlog_records": st.backlog_records, "log_size_bytes": st.log.size_bytes,
                "uplink": {"stopped": s.stopped if s else None,
                           "records_sent": ss.records_sent if ss else 0,
                           "last_error": ss.last_error if ss else "",
                           "tls_error": ss.tls_error if ss else "",
                           "retries": ss.retries if ss else 0,
                           "batches_sent": ss.batches_sent if ss else 0}})
        problems = [p for d in derived for p in stream_problems(d, 0, float("inf"))]
        return {"derived_streams": derived,
                "transforms": [r.status() for r in self.runners],
                "edge_processing_problems": problems}


__all__ = ["EdgeProcessing", "derived_streams"]
