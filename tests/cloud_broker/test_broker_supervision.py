"""The broker's background tasks run under the shared supervisor (G9): a task that fails
is restarted with backoff, counted in the metrics and shown in health with its reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import generate_latest

from cloud_broker.broker import Broker
from cloud_broker.config import BrokerConfig, TopicConfig


def test_a_failing_retention_pass_is_restarted_counted_and_shown(tmp_path: Path) -> None:
    cfg = BrokerConfig(data_dir=tmp_path, topics={"t": TopicConfig("t", 1)},
                       retention_check_ms=10)

    async def main() -> tuple[bool, dict[str, object], bytes, int]:
        broker = Broker(cfg)
        calls = {"n": 0}
        real = broker.store.enforce_retention

        def flaky() -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a bug in a retention pass")
            return real()

        broker.store.enforce_retention = flaky  # type: ignore[method-assign]
        await broker.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while calls["n"] < 3:  # failed once, restarted, and ran again
                assert loop.time() < deadline, "the retention task was not restarted"
                await asyncio.sleep(0.01)
            ok, body = broker.health()
            return ok, body, generate_latest(broker.metrics.registry), calls["n"]
        finally:
            await broker.stop()

    ok, body, metrics, _ = asyncio.run(main())
    assert not ok and body["status"] == "failing"
    problems = body["task_problems"]
    assert isinstance(problems, list) and len(problems) == 1
    assert "retention" in problems[0] and "a bug in a retention pass" in problems[0]
    assert b'broker_task_restarts_total{reason="RuntimeError",task="retention"} 1.0' in metrics
    assert b'broker_task_up{task="retention"} 1.0' in metrics


def test_a_healthy_broker_reports_its_tasks_running(tmp_path: Path) -> None:
    cfg = BrokerConfig(data_dir=tmp_path, topics={"t": TopicConfig("t", 1)})

    async def main() -> tuple[bool, dict[str, object]]:
        broker = Broker(cfg)
        await broker.start()
        try:
            await asyncio.sleep(0)
            return broker.health()
        finally:
            await broker.stop()

    ok, body = asyncio.run(main())
    assert ok and body["task_problems"] == []
    names = {t["name"]: t["running"] for t in body["tasks"]}  # type: ignore[union-attr]
    assert names == {"ingest-checkpoints": True, "retention": True, "group-expiry": True}
