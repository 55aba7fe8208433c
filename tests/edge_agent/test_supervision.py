"""Supervision (G9): a task of a live agent that fails is counted, turns /healthz unhealthy
with its reason, is restarted with backoff, and readings flow again; nothing is lost.

The agent runs in-process (so a method of a live component can be made to fail once)
against a real Mosquitto and an in-process cloud (PartitionStore + Ingestor). The
supervisor itself is also tested alone: backoff, a task that returns, the health rule.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_agent_testing import Publisher, read_stream, seqs_by_device, write_config

from cloud_broker.config import TopicConfig
from cloud_broker.ingest import Ingestor
from cloud_broker.storage import PartitionStore
from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.supervisor import Supervisor, task_problems
from tests.helpers import Server, until
from tests.helpers_uplink import memory_uplink, read_logs, seq_of

# (appended to the [status] table of write_config)
FAST = "task_failure_window_s = 3\nrestart_max_s = 0.5\n[ingest]\ndedup_checkpoint_s = 0.2\n"


def fail_once(obj: object, method: str, exc: BaseException) -> list[int]:
    """Make ``obj.method`` raise ``exc`` on its next call only; returns the call log."""
    orig = getattr(obj, method)
    calls: list[int] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return orig(*args, **kwargs)

    setattr(obj, method, wrapper)
    return calls


async def publish(pub: Publisher, seqs: range) -> None:
    for seq in seqs:
        await asyncio.to_thread(pub.publish, seq)


def test_failed_ingest_and_forwarder_are_restarted_and_reported(
        tmp_path: Path, mosquitto: Server) -> None:
    cfg = load_config(write_config(tmp_path, mosquitto.port, extra=FAST)[0])
    store = PartitionStore(tmp_path / "cloud")
    store.ensure_topic(TopicConfig("telemetry", 2))
    ingestor = Ingestor(store, tmp_path / "cloud")
    ingestor.recover()
    try:
        asyncio.run(_supervised(cfg, ingestor, mosquitto.port))
        cloud = read_logs({p.index: p.log for p in store.partitions("telemetry")})
        assert sorted(seq_of(r.value) for r in cloud.records) == list(range(30))
    finally:
        store.close()
    # everything exactly once in the edge log too, in order
    assert seqs_by_device(read_stream(tmp_path / "data"))["s1"] == list(range(30))


async def _supervised(cfg: Any, ingestor: Ingestor, mqtt_port: int) -> None:
    agent = Agent(cfg, uplink=memory_uplink(ingestor))
    await agent.start()
    pub = await asyncio.to_thread(Publisher, mqtt_port, "s1")
    host, port = agent.status_address or ("", 0)
    http = httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=5)
    try:
        await until(lambda: all(m.subscribed for m in agent.sessions), 30, "the subscription")
        assert (await http.get("/healthz")).status_code == 200
        tel = agent.streams[0]
        await publish(pub, range(10))
        await until(lambda: pub.all_acked(10), 30, "the first readings")

        # 1. the ingest pipeline fails on its next batch: that batch's readings were
        # taken from the inbox and never acknowledged. (A failure while judging one
        # message only dead-letters that message; writing is outside that protection.)
        calls = fail_once(tel.ingest, "_write", RuntimeError("injected ingest failure"))
        await publish(pub, range(10, 20))
        resp = await until(lambda: calls, 10, "the injected failure")
        resp = await http.get("/healthz")
        assert resp.status_code == 503
        [problem] = resp.json()["problems"]
        assert "task ingest-telemetry" in problem
        assert "RuntimeError: injected ingest failure" in problem
        metrics = (await http.get("/metrics")).text
        assert ('edge_task_restarts_total{reason="RuntimeError",task="ingest-telemetry"} 1.0'
                in metrics)
        # restarted, and the session reconnected: Mosquitto redelivered the lost batch
        await until(lambda: pub.all_acked(20), 30, "the readings of the failed batch")
        await until(lambda: tel.store.acked_offset >= 19, 30, "the cloud to ack them")
        [task] = [t for t in (await http.get("/status")).json()["tasks"]
                  if t["name"] == "ingest-telemetry"]
        assert task["running"] and task["failures"] == 1
        assert tel.session is not None and tel.session.connects >= 2

        # 1b. the pipeline's acknowledgement loop fails: the pipeline ends with it (it
        # must not go on appending without ever acknowledging) and both restart
        fail_once(tel.ingest, "ack", RuntimeError("injected ack failure"))
        await publish(pub, range(20, 25))
        # (the failure comes only after the batch's fsync: 30 s like the waits around it,
        # a loaded machine's fsyncs can take seconds)
        await until(lambda: agent.supervisor.restarts[("ingest-telemetry", "RuntimeError")]
                    >= 2, 30, "the ack loop failure")
        await until(lambda: pub.all_acked(25), 30, "the readings of the failed ack loop")
        [task] = [t for t in agent.snapshot()["tasks"] if t["name"] == "ingest-telemetry"]
        assert task["failures"] == 2 and "injected ack failure" in task["last_error"]

        # 2. the forwarder's scheduler fails: restarted, the stream drains again
        fwd = agent.forwarder
        assert fwd is not None
        fail_once(fwd, "_launch_ready", ValueError("injected forwarder failure"))
        fwd.notify()
        await publish(pub, range(25, 30))
        await until(lambda: pub.all_acked(30), 30, "the last readings")
        await until(lambda: tel.store.acked_offset >= 29, 30, "the cloud to ack all")
        doc = (await http.get("/status")).json()
        assert any("task forwarder" in p and "injected forwarder failure" in p
                   for p in doc["problems"])
        assert {t["name"]: t["restarts"] for t in doc["tasks"]}["forwarder"] == {
            "ValueError": 1}

        # 3. healthy again once the failures are older than task_failure_window_s
        await until(lambda: agent.snapshot()["healthy"], 10, "health to recover")
        assert (await http.get("/healthz")).status_code == 200
    finally:
        await http.aclose()
        await asyncio.to_thread(pub.close)
        await agent.stop()


def test_status_server_failure_is_restarted(tmp_path: Path, mosquitto: Server) -> None:
    cfg_path, _ = write_config(tmp_path, mosquitto.port, extra=FAST)
    asyncio.run(_status_restart(load_config(cfg_path)))


async def _status_restart(cfg: Any) -> None:
    agent = Agent(cfg)
    await agent.start()
    try:
        host, port = agent.status_address or ("", 0)
        url = f"http://{host}:{port}/healthz"
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(url)).status_code == 200
            # the server ends as if it had crashed (uvicorn returns from serve())
            agent._server.should_exit = True
            await until(lambda: agent.supervisor.states["status-server"].failures == 1, 10,
                        "the status server to end")

            async def answers() -> int:
                try:
                    return (await http.get(url)).status_code
                except httpx.HTTPError:
                    return 0

            deadline = time.monotonic() + 15
            while (code := await answers()) != 503:
                assert time.monotonic() < deadline, "the status server was not restarted"
                await asyncio.sleep(0.05)
            body = (await http.get(url)).json()
            assert any("task status-server" in p and "ended unexpectedly" in p
                       for p in body["problems"])
            assert code == 503
    finally:
        await agent.stop()


# -- the supervisor alone ------------------------------------------------------------------

def test_supervisor_restarts_with_backoff_and_stops_cleanly() -> None:
    async def main() -> None:
        sup = Supervisor(backoff_max_s=0.05)
        runs: list[float] = []

        async def flaky() -> None:
            runs.append(time.monotonic())
            if len(runs) < 4:
                raise OSError("flaky")
            await asyncio.sleep(3600)

        async def returns() -> None:
            return None

        sup.spawn("flaky", flaky)
        sup.spawn("returns", returns)
        with pytest.raises(ValueError):
            sup.spawn("flaky", flaky)
        await until(lambda: len(runs) >= 4, 5, "three restarts")
        await until(lambda: sup.restarts[("returns", "returned")] >= 2, 5, "returns twice")
        assert sup.restarts[("flaky", "OSError")] == 3
        st = {t["name"]: t for t in sup.status()}
        assert st["flaky"]["running"] and st["flaky"]["failures"] == 3
        assert st["flaky"]["last_error"] == "OSError: flaky"
        sup.cancel()
        await asyncio.wait_for(sup.wait(), 5)
        assert sup.restarts[("flaky", "OSError")] == 3  # a stop is not a failure

    asyncio.run(main())


def test_task_health_rule() -> None:
    ok = {"name": "t", "running": True, "failures": 0, "last_failure_at": None,
          "down_since": None, "last_error": ""}
    assert task_problems([ok], 100.0, 60) == []
    down = {**ok, "running": False, "failures": 2, "last_failure_at": 10.0,
            "down_since": 10.0, "last_error": "KeyError: 'x'"}
    [p] = task_problems([down], 1000.0, 60)  # down: a problem however long ago
    assert "down, restarting" in p and "KeyError" in p and "2 failure(s)" in p
    back = {**down, "running": True, "down_since": None}
    assert "restarted" in task_problems([back], 69.0, 60)[0]
    assert task_problems([back], 70.0, 60) == []
