"""A broker with a Kafka listener in a background thread, filled through the store."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloud_broker.broker import Broker
from cloud_broker.config import BrokerConfig, KafkaConfig, TokenConfig, TopicConfig
from shared_log import Record

TOKEN = "kafka-reader"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp: Path, partitions: int = 2, sasl: bool = False, compression: str = "none",
           **kw: object) -> BrokerConfig:
    port = free_port()
    tokens = (TokenConfig(TOKEN, "*", frozenset({"read"}), ("telemetry",), ("g-*",)),)
    return BrokerConfig(
        data_dir=tmp, topics={"telemetry": TopicConfig("telemetry", partitions)},
        tokens=tokens, auth_required=sasl,
        kafka=KafkaConfig("127.0.0.1", port, "127.0.0.1", port, sasl=sasl,
                          compression=compression), **kw)  # type: ignore[arg-type]


class Running:
    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop) -> None:
        self.broker, self.loop = broker, loop

    @property
    def bootstrap(self) -> str:
        cfg = self.broker.config.kafka
        assert cfg is not None
        return f"127.0.0.1:{cfg.port}"

    def call(self, fn, *args):
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def append(self, partition: int, n: int, start_ts: int = 1_700_000_000_000,
               key: bytes = b"dev-1") -> None:
        def go() -> None:
            part = self.broker.store.partition("telemetry", partition)
            base = part.end_offset
            recs = [Record(key, b'{"v": %d}' % (base + i), start_ts + base + i,
                           (("origin", b"gw-1:%d" % (base + i)),)) for i in range(n)]
            for i in range(0, n, 5000):
                _, last = part.append(recs[i:i + 5000])
            self.loop.create_task(self._durable(part, last))

        self.call(go)
        part = self.broker.store.partition("telemetry", partition)
        deadline = 30.0
        import time
        t0 = time.monotonic()
        while part.durable_offset < part.end_offset and time.monotonic() - t0 < deadline:
            time.sleep(0.01)

    async def _durable(self, part, last: int) -> None:
        await part.wait_durable(last)
        part.notify()


@contextmanager
def running_broker(cfg: BrokerConfig) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Broker] = {}

    async def main() -> None:
        b = Broker(cfg)
        await b.start()
        box["b"] = b
        started.set()

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(30)
    try:
        yield Running(box["b"], loop)
    finally:
        asyncio.run_coroutine_threadsafe(box["b"].stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
